//! A real Kubernetes control plane under test (etcd, kube-apiserver, kube-controller-manager,
//! built from upstream source by `cargo xtask setup`) and a test kubelet that runs its pods as
//! network namespaces on netns nodes. Nothing of the API is stubbed: what the agent and the CLI
//! meet here is what they meet on a cluster.

pub mod app;
pub mod controlplane;
pub mod crds;
pub mod kubelet;
pub mod node;
pub mod ops;
pub mod pki;
pub mod proxy;

pub use controlplane::ControlPlane;
pub use kubelet::{Kubelet, PodInfo, http_get, node_name};
