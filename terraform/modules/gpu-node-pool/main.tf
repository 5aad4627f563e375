# GPU node pools of the inference tier, cloud-neutral.
#
# Creating the nodes is the cloud's (or the data centre's) business and differs
# per provider. This module holds the part that does not: the labels and taint
# every GPU node must carry, the namespace the vLLM Deployments run in, its GPU
# quota and a priority class. Cloud node pools get the labels and taint from the
# node_labels / node_taints outputs. Static on-premises nodes are labelled and
# tainted here through the Kubernetes API (pools[*].node_names).

locals {
  pool_labels = {
    for name, pool in var.pools : name => merge(pool.labels, {
      "gennai.example.go.jp/node-pool" = name
      "gennai.example.go.jp/workload"  = "inference"
    })
  }

  # One entry per static node: "pool/node" => { pool, node }.
  static_nodes = merge({}, [
    for name, pool in var.pools : {
      for node in pool.node_names : "${name}/${node}" => { pool = name, node = node }
    }
  ]...)

  computed_gpu_quota = sum(concat([0], [for pool in var.pools : pool.gpus_per_node * pool.max_nodes]))

  quota_hard = merge(
    { "requests.nvidia.com/gpu" = tostring(coalesce(var.gpu_quota, local.computed_gpu_quota)) },
    var.cpu_requests_quota == null ? {} : { "requests.cpu" = var.cpu_requests_quota },
    var.memory_requests_quota == null ? {} : { "requests.memory" = var.memory_requests_quota },
  )

  namespace = var.create_namespace ? kubernetes_namespace_v1.inference[0].metadata[0].name : var.namespace
}

resource "kubernetes_namespace_v1" "inference" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/part-of"                  = "gennai"
      "pod-security.kubernetes.io/enforce"         = var.pod_security_level
      "pod-security.kubernetes.io/enforce-version" = "latest"
    }
  }
}

resource "kubernetes_resource_quota_v1" "gpu" {
  metadata {
    name      = "gennai-gpu"
    namespace = local.namespace
  }

  spec {
    hard = local.quota_hard
  }
}

# Defaults for containers without requests (sidecars, debug pods), so that the
# quota above does not reject them when CPU or memory quotas are set.
resource "kubernetes_limit_range_v1" "defaults" {
  metadata {
    name      = "gennai-defaults"
    namespace = local.namespace
  }

  spec {
    limit {
      type = "Container"
      default_request = {
        cpu    = "100m"
        memory = "128Mi"
      }
      default = {
        memory = "512Mi"
      }
    }
  }
}

resource "kubernetes_priority_class_v1" "inference" {
  count = var.priority_class == null ? 0 : 1

  metadata {
    name = var.priority_class.name
  }

  value             = var.priority_class.value
  global_default    = false
  preemption_policy = "PreemptLowerPriority"
  description       = "Gennai inference (vLLM) pods: scheduled before batch work on scarce GPU nodes."
}

resource "kubernetes_labels" "static_node" {
  for_each = local.static_nodes

  api_version   = "v1"
  kind          = "Node"
  field_manager = var.field_manager

  metadata {
    name = each.value.node
  }

  labels = local.pool_labels[each.value.pool]
}

resource "kubernetes_node_taint" "static_node" {
  for_each = local.static_nodes

  field_manager = var.field_manager

  metadata {
    name = each.value.node
  }

  taint {
    key    = var.gpu_taint.key
    value  = var.gpu_taint.value
    effect = var.gpu_taint.effect
  }
}

# Default deny for the whole inference namespace, ingress and egress.
#
# The vLLM servers hold prompts of confidentiality level 2-3 and serve anyone
# who reaches them. The per-model NetworkPolicy that `python -m inference
# render` emits admits only the gateway's pods (ingress); this one adds that no
# pod here (a debug pod, a model whose remote code misbehaves) can send anything
# anywhere (the internet, the platform's database, Redis) except DNS, and that
# pods without a rendered policy accept nothing. Weights come from the models
# PVC with HF_HUB_OFFLINE=1, so vLLM needs no egress. List extra destinations
# (an internal model mirror) in egress_allowed_cidrs.
resource "kubernetes_network_policy_v1" "default_deny" {
  count = var.default_deny_network_policy ? 1 : 0

  metadata {
    name      = "gennai-default-deny"
    namespace = local.namespace
    labels = {
      "app.kubernetes.io/part-of" = "gennai"
    }
  }

  spec {
    pod_selector {}
    policy_types = ["Ingress", "Egress"]

    egress {
      to {
        namespace_selector {
          match_labels = {
            "kubernetes.io/metadata.name" = "kube-system"
          }
        }
        pod_selector {
          match_labels = {
            "k8s-app" = "kube-dns"
          }
        }
      }
      ports {
        port     = "53"
        protocol = "UDP"
      }
      ports {
        port     = "53"
        protocol = "TCP"
      }
    }

    dynamic "egress" {
      for_each = length(var.egress_allowed_cidrs) > 0 ? [var.egress_allowed_cidrs] : []
      content {
        dynamic "to" {
          for_each = egress.value
          content {
            ip_block {
              cidr = to.value
            }
          }
        }
      }
    }
  }
}
