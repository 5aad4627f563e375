output "namespace" {
  description = "Namespace to apply the rendered vLLM manifests to (kubectl apply -n ...)."
  value       = local.namespace
}

output "node_labels" {
  description = "Labels per pool, for the cloud's node-pool resource (e.g. its labels / node_labels argument)."
  value       = local.pool_labels
}

output "node_taints" {
  description = "Taints per pool, in the key / value / effect shape most node-pool resources accept."
  value       = { for name in keys(var.pools) : name => [var.gpu_taint] }
}

output "kubelet_args" {
  description = "Per pool: kubelet flags for self-managed nodes (kubeadm KubeletConfiguration or a bootstrap script)."
  value = {
    for name, labels in local.pool_labels : name => join(" ", [
      "--node-labels=${join(",", [for k in sort(keys(labels)) : "${k}=${labels[k]}"])}",
      "--register-with-taints=${var.gpu_taint.key}=${var.gpu_taint.value}:${var.gpu_taint.effect}",
    ])
  }
}

output "pod_scheduling" {
  description = "Per pool: nodeSelector and tolerations for pods that must run on it (matches inference/render.py)."
  value = {
    for name, pool in var.pools : name => {
      node_selector = {
        "nvidia.com/gpu.product"         = pool.gpu_product
        "gennai.example.go.jp/node-pool" = name
      }
      tolerations = [{ key = var.gpu_taint.key, operator = "Exists", effect = var.gpu_taint.effect }]
    }
  }
}

output "gpu_quota" {
  description = "requests.nvidia.com/gpu enforced in the namespace."
  value       = local.quota_hard["requests.nvidia.com/gpu"]
}

output "priority_class_name" {
  description = "PriorityClass for inference pods, or null."
  value       = var.priority_class == null ? null : kubernetes_priority_class_v1.inference[0].metadata[0].name
}
