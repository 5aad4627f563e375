# The database roles of docs/tenancy.md ("Production: what the DBA creates"):
#
#   gennai_owner    NOLOGIN, owns the database and every table (migrations run as it)
#   gennai_app      LOGIN, owns nothing, NOSUPERUSER NOBYPASSRLS: RLS binds it
#   gennai_migrate  LOGIN, member of gennai_owner and gennai_app
#
# Table and sequence privileges of the app role are NOT managed here: Django's
# post_migrate hook (apps/tenancy/grants.py) re-applies them after every
# migrate, including the revokes on django_migrations and the audit log. A
# postgresql_grant on tables would fight with those revokes.

resource "postgresql_role" "owner" {
  name                      = var.owner_role
  login                     = false
  superuser                 = false
  create_database           = var.owner_can_create_database
  create_role               = false
  replication               = false
  bypass_row_level_security = false
  inherit                   = true

  # Destroying the owner role would reassign or drop every table. Remove this
  # guard only to tear down a whole environment on purpose.
  lifecycle {
    prevent_destroy = true
  }
}

resource "postgresql_role" "app" {
  name                      = var.app_role
  login                     = true
  password                  = var.app_password
  superuser                 = false
  create_database           = false
  create_role               = false
  replication               = false
  bypass_row_level_security = false
  inherit                   = true
  connection_limit          = var.app_connection_limit
  statement_timeout         = var.app_statement_timeout_ms

  idle_in_transaction_session_timeout = var.app_idle_in_transaction_timeout_ms
}

resource "postgresql_role" "migrate" {
  name                      = var.migrate_role
  login                     = true
  password                  = var.migrate_password
  superuser                 = false
  create_database           = false
  create_role               = false
  replication               = false
  bypass_row_level_security = false
  inherit                   = true
  # owner_mode() runs SET ROLE gennai_owner; leaving it runs SET ROLE gennai_app.
  roles = [postgresql_role.owner.name, postgresql_role.app.name]
}

resource "postgresql_database" "this" {
  name              = var.database_name
  owner             = postgresql_role.owner.name
  encoding          = "UTF8"
  template          = "template0"
  lc_collate        = var.lc_collate
  lc_ctype          = var.lc_ctype
  connection_limit  = -1
  allow_connections = true

  lifecycle {
    prevent_destroy = true
  }
}

# REVOKE ALL ON DATABASE ... FROM PUBLIC: only the two logins below may connect.
resource "postgresql_grant" "database_public" {
  database    = postgresql_database.this.name
  role        = "public"
  object_type = "database"
  privileges  = []

  # Grant the logins first, so that no moment exists where they cannot connect.
  depends_on = [postgresql_grant.database_connect]
}

resource "postgresql_grant" "database_connect" {
  for_each = toset([postgresql_role.app.name, postgresql_role.migrate.name])

  database    = postgresql_database.this.name
  role        = each.value
  object_type = "database"
  privileges  = ["CONNECT"]
}

# Only the owner creates objects in public (PostgreSQL 15+ owns public by
# pg_database_owner, i.e. the owner role; this also revokes CREATE from PUBLIC).
resource "postgresql_grant" "schema_public" {
  database    = postgresql_database.this.name
  role        = "public"
  schema      = "public"
  object_type = "schema"
  privileges  = ["USAGE"]
}

resource "postgresql_grant" "schema_app" {
  database    = postgresql_database.this.name
  role        = postgresql_role.app.name
  schema      = "public"
  object_type = "schema"
  privileges  = ["USAGE"]
}

resource "postgresql_extension" "this" {
  for_each = toset(var.extensions)

  name     = each.value
  database = postgresql_database.this.name
}
