# --- PostgreSQL (the server exists; this creates roles and the database) ----

variable "pg_host" {
  description = "PostgreSQL host reachable from where Terraform runs (direct, not through pgbouncer)."
  type        = string
}

variable "pg_port" {
  description = "PostgreSQL port."
  type        = number
  default     = 5432
}

variable "pg_admin_username" {
  description = "Admin login with CREATEROLE and CREATEDB (a superuser, or the managed service's admin role)."
  type        = string
  default     = "postgres"
}

variable "pg_admin_password" {
  description = "Password of the admin login (TF_VAR_pg_admin_password)."
  type        = string
  sensitive   = true
}

variable "pg_admin_is_superuser" {
  description = "false on managed services whose admin is not a superuser (the provider then avoids superuser-only statements)."
  type        = bool
  default     = true
}

variable "pg_sslmode" {
  description = "sslmode of the admin connection."
  type        = string
  default     = "require"
}

variable "db_app_password" {
  description = "Password of gennai_app (TF_VAR_db_app_password, from the secret store)."
  type        = string
  sensitive   = true
}

variable "db_migrate_password" {
  description = "Password of gennai_migrate (TF_VAR_db_migrate_password)."
  type        = string
  sensitive   = true
}

variable "db_extensions" {
  description = "Extensions to create in the database."
  type        = list(string)
  default     = []
}

# --- Kubernetes --------------------------------------------------------------

variable "kubeconfig_path" {
  description = "kubeconfig of the cluster."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "kubeconfig context of the dev cluster."
  type        = string
}

variable "gpu_pools" {
  description = "GPU node pools; see modules/gpu-node-pool (variable pools)."
  type = map(object({
    gpu_product   = string
    gpus_per_node = number
    max_nodes     = number
    node_names    = optional(list(string), [])
    labels        = optional(map(string), {})
  }))
  default = {
    l40s = {
      gpu_product   = "NVIDIA-L40S"
      gpus_per_node = 1
      max_nodes     = 2
    }
  }
}
