terraform {
  required_version = ">= 1.6"

  required_providers {
    postgresql = {
      source  = "cyrilgdn/postgresql"
      version = "~> 1.25"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.36, < 4.0"
    }
  }

  # State holds the role passwords: keep it in an encrypted, access-controlled
  # backend, not on a laptop. Configure with `terraform init -backend-config=...`.
  # backend "s3" {}
}
