output "database" {
  description = "Database and role names, and the role settings of each kind of process."
  value = {
    name                = module.database_roles.database_name
    app_login           = module.database_roles.app_role
    migrate_login       = module.database_roles.migrate_role
    app_environment     = module.database_roles.app_environment
    migrate_environment = module.database_roles.migrate_environment
  }
}

output "inference" {
  description = "Namespace, GPU quota and per-pool scheduling for the rendered vLLM manifests."
  value = {
    namespace      = module.gpu_node_pool.namespace
    gpu_quota      = module.gpu_node_pool.gpu_quota
    priority_class = module.gpu_node_pool.priority_class_name
    pod_scheduling = module.gpu_node_pool.pod_scheduling
    node_labels    = module.gpu_node_pool.node_labels
    kubelet_args   = module.gpu_node_pool.kubelet_args
  }
}
