variable "database_name" {
  description = "Database of the platform, owned by the owner role."
  type        = string
  default     = "gennai"
}

variable "owner_role" {
  description = "NOLOGIN role that owns the database and every table (GENNAI_DB_OWNER_ROLE). Used only through SET ROLE by the migration login."
  type        = string
  default     = "gennai_owner"
}

variable "app_role" {
  description = "LOGIN role of the web app and Celery workers (GENNAI_DB_APP_ROLE): owns nothing, no BYPASSRLS."
  type        = string
  default     = "gennai_app"
}

variable "migrate_role" {
  description = "LOGIN role of the migration job: member of the owner role (owner_mode) and of the app role (post-migrate grants)."
  type        = string
  default     = "gennai_migrate"
}

variable "app_password" {
  description = "Password of the app login. Pass it from a secret store (TF_VAR_app_password), never from a committed file."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.app_password) >= 24
    error_message = "Use a generated password of at least 24 characters."
  }
}

variable "migrate_password" {
  description = "Password of the migration login."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.migrate_password) >= 24
    error_message = "Use a generated password of at least 24 characters."
  }
}

variable "owner_can_create_database" {
  description = "CREATEDB on the owner role. Production: false (docs/tenancy.md). Only an environment whose CI creates test databases as the owner needs true."
  type        = bool
  default     = false
}

variable "app_connection_limit" {
  description = "Maximum concurrent connections of the app login (-1: no limit). Size it with pgbouncer's default_pool_size."
  type        = number
  default     = -1
}

variable "app_statement_timeout_ms" {
  description = "statement_timeout of the app login in milliseconds (0: none). Set it once ingestion's longest statement is known, so a runaway query cannot hold a pooled connection forever."
  type        = number
  default     = 0
}

variable "app_idle_in_transaction_timeout_ms" {
  description = "idle_in_transaction_session_timeout of the app login in milliseconds (0: none). Every scope is one short transaction, so an idle one is a bug that would pin a pgbouncer server connection."
  type        = number
  default     = 60000
}

variable "lc_collate" {
  description = "LC_COLLATE of the database. C.UTF-8 keeps index order byte-wise and is available on PostgreSQL 15+."
  type        = string
  default     = "C.UTF-8"
}

variable "lc_ctype" {
  description = "LC_CTYPE of the database."
  type        = string
  default     = "C.UTF-8"
}

variable "extensions" {
  description = "Extensions to create in the database (they need the provider login to be a superuser or the managed service's admin), e.g. [\"vector\", \"pg_trgm\"]."
  type        = list(string)
  default     = []
}
