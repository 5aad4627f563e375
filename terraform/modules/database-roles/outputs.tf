output "database_name" {
  description = "Name of the platform database."
  value       = postgresql_database.this.name
}

output "owner_role" {
  description = "The NOLOGIN owner role (GENNAI_DB_OWNER_ROLE)."
  value       = postgresql_role.owner.name
}

output "app_role" {
  description = "The app login (user of the web app's and the workers' DATABASE_URL)."
  value       = postgresql_role.app.name
}

output "migrate_role" {
  description = "The migration login (user of the migration job's DATABASE_URL)."
  value       = postgresql_role.migrate.name
}

output "app_environment" {
  description = "Role settings of the web app and Celery workers: they log in as the app role, so no SET ROLE."
  value = {
    GENNAI_DB_APP_ROLE   = ""
    GENNAI_DB_OWNER_ROLE = postgresql_role.owner.name
  }
}

output "migrate_environment" {
  description = "Role settings of the migration job (manage.py migrate), which switches roles with SET ROLE."
  value = {
    GENNAI_DB_APP_ROLE   = postgresql_role.app.name
    GENNAI_DB_OWNER_ROLE = postgresql_role.owner.name
  }
}
