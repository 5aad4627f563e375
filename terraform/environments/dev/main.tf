# Development environment: the platform database's roles on an existing
# PostgreSQL server, and the inference namespace and GPU node settings on an
# existing Kubernetes cluster.

provider "postgresql" {
  host            = var.pg_host
  port            = var.pg_port
  database        = "postgres"
  username        = var.pg_admin_username
  password        = var.pg_admin_password
  sslmode         = var.pg_sslmode
  superuser       = var.pg_admin_is_superuser
  connect_timeout = 15
}

provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}

module "database_roles" {
  source = "../../modules/database-roles"

  database_name    = "gennai"
  app_password     = var.db_app_password
  migrate_password = var.db_migrate_password
  extensions       = var.db_extensions
  # Dev CI may create throwaway test databases as the owner role (as `make test` does locally).
  owner_can_create_database = true
}

module "gpu_node_pool" {
  source = "../../modules/gpu-node-pool"

  namespace          = "gennai-inference"
  pools              = var.gpu_pools
  cpu_requests_quota = "32"
}
