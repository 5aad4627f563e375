variable "namespace" {
  description = "Namespace of the inference tier (vLLM Deployments rendered by `python -m inference render`)."
  type        = string
  default     = "gennai-inference"
}

variable "create_namespace" {
  description = "Create the namespace (false: it exists already, e.g. created by the cluster's own tooling)."
  type        = bool
  default     = true
}

variable "pod_security_level" {
  description = "Pod Security Standard enforced in the namespace. The rendered vLLM pods satisfy \"restricted\"."
  type        = string
  default     = "restricted"

  validation {
    condition     = contains(["privileged", "baseline", "restricted"], var.pod_security_level)
    error_message = "pod_security_level must be privileged, baseline or restricted."
  }
}

variable "pools" {
  description = <<-EOT
    GPU node pools, by name. For each pool:
      gpu_product    value of the nvidia.com/gpu.product label that NVIDIA GPU feature discovery
                     sets (inference/gpus.py: NVIDIA-H100-80GB-HBM3, NVIDIA-H200, NVIDIA-L40S)
      gpus_per_node  GPUs per node
      max_nodes      upper bound of the pool (autoscaler maximum, or the number of static nodes)
      node_names     existing nodes to label and taint from here (on-premises / static pools).
                     Leave empty for cloud node pools and pass the node_labels / node_taints
                     outputs to the cloud's node-pool resource instead.
      labels         extra node labels
  EOT
  type = map(object({
    gpu_product   = string
    gpus_per_node = number
    max_nodes     = number
    node_names    = optional(list(string), [])
    labels        = optional(map(string), {})
  }))

  validation {
    condition     = alltrue([for name, pool in var.pools : can(regex("^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$", name))])
    error_message = "Pool names must be DNS labels of at most 32 characters (they become label values)."
  }

  validation {
    condition     = alltrue([for pool in var.pools : pool.gpus_per_node >= 1 && pool.max_nodes >= 0])
    error_message = "gpus_per_node must be at least 1 and max_nodes at least 0."
  }

  validation {
    condition     = alltrue([for pool in var.pools : length(pool.node_names) <= pool.max_nodes])
    error_message = "A pool lists more node_names than its max_nodes."
  }
}

variable "gpu_taint" {
  description = "Taint every GPU node carries so that only pods tolerating it land there (the rendered vLLM pods tolerate key nvidia.com/gpu with operator Exists)."
  type = object({
    key    = string
    value  = string
    effect = string
  })
  default = {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NoSchedule"
  }

  validation {
    condition     = contains(["NoSchedule", "PreferNoSchedule", "NoExecute"], var.gpu_taint.effect)
    error_message = "effect must be NoSchedule, PreferNoSchedule or NoExecute."
  }
}

variable "gpu_quota" {
  description = "requests.nvidia.com/gpu of the namespace. null: the sum of gpus_per_node * max_nodes over all pools."
  type        = number
  default     = null
}

variable "cpu_requests_quota" {
  description = "requests.cpu of the namespace (null: no limit). The rendered pods request 4 CPUs per GPU."
  type        = string
  default     = null
}

variable "memory_requests_quota" {
  description = "requests.memory of the namespace (null: no limit)."
  type        = string
  default     = null
}

variable "priority_class" {
  description = "PriorityClass for inference pods (null: none). Cluster-wide: create it once per cluster."
  type = object({
    name  = string
    value = number
  })
  default = {
    name  = "gennai-inference"
    value = 100000
  }
}

variable "field_manager" {
  description = "Server-side apply field manager for node labels and taints set from here."
  type        = string
  default     = "terraform-gennai"
}

variable "default_deny_network_policy" {
  description = "Manage a NetworkPolicy that denies all ingress and all egress but DNS in the namespace (the rendered per-model policies then admit the gateway). Turn off only where the cluster has no NetworkPolicy support and something else isolates the namespace."
  type        = bool
  default     = true
}

variable "egress_allowed_cidrs" {
  description = "Extra egress destinations of the inference pods (CIDRs, e.g. an internal model mirror). Empty: DNS only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.egress_allowed_cidrs : can(cidrnetmask(cidr)) && cidr != "0.0.0.0/0"])
    error_message = "egress_allowed_cidrs must be IPv4 CIDRs, and not 0.0.0.0/0 (that would undo the default deny)."
  }
}
