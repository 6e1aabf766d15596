//! The sample app for the control-plane tests and `cargo xtask demo --cluster`: a shop in its
//! own namespace (Deployments, a StatefulSet, Services with named targetPorts), a DNS Deployment
//! in kube-system behind the `kube-dns` Service, and a NetworkPolicy that is wrong for the db.
//!
//! Placement is pinned with `kubernetes.io/hostname` node selectors so that no client reaches a
//! ClusterIP backend on its own node (the test kubelet's kube-proxy stand-in does not
//! masquerade): frontend and db on node-1, api on node-2, dns on node-3.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use super::{Kubelet, PodInfo};
use crate::{TcpServer, UdpServer, tcp_connect, udp_request};

/// The ClusterIP of `kube-dns`, fixed in its Service as kubeadm does.
pub const DNS_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The ClusterIP of the `api` Service.
pub const API_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 80);
/// The payment provider, outside the cluster.
pub const PAYMENTS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-3}
      containers:
        - name: coredns
          image: registry.k8s.io/coredns/coredns:v1.12.0
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP, targetPort: dns}
    - {name: dns-tcp, port: 53, protocol: TCP, targetPort: dns-tcp}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels: {app: frontend}
  template:
    metadata:
      labels: {app: frontend, tier: web}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-1}
      containers:
        - name: web
          image: example.com/shop/frontend:1.0
          ports:
            - {name: http, containerPort: 80}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api, tier: backend}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-2}
      containers:
        - name: api
          image: example.com/shop/api:1.0
          ports:
            - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
spec:
  clusterIP: 10.96.0.80
  selector: {app: api}
  ports:
    - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: shop
spec:
  clusterIP: None
  selector: {app: db}
  ports:
    - {name: pg, port: 5432, targetPort: pg}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: shop
spec:
  serviceName: db
  replicas: 1
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db, tier: data}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-1}
      containers:
        - name: postgres
          image: example.com/postgres:17
          ports:
            - {name: pg, containerPort: 5432}
---
# Wrong on purpose: the db only admits the frontend, so the api's queries are flagged.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-frontend
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: db}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector:
            matchLabels: {app: frontend}
      ports:
        - {protocol: TCP, port: 5432}
"#;

/// The running app: its pods and the servers in them.
pub struct Shop {
    pub frontend: PodInfo,
    pub api: PodInfo,
    pub db: PodInfo,
    pub dns: PodInfo,
    _servers: (TcpServer, TcpServer, UdpServer, TcpServer),
}

/// Waits for one running pod of `namespace` named `prefix*`.
pub fn one_pod(kubelet: &Kubelet, namespace: &str, prefix: &str, timeout: Duration) -> PodInfo {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(p) = kubelet.pods_named(namespace, prefix).into_iter().next() {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pod {namespace}/{prefix}* running after {timeout:?}; kubelet log:\n{}",
            kubelet.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Shop {
    /// Finds the app's pods (made by the real controllers) and starts its servers: the api on
    /// 8080, the db on 5432, DNS on 53/UDP, and the payment provider on 203.0.113.10:443.
    pub fn start(kubelet: &Kubelet) -> Self {
        let t = Duration::from_secs(90);
        let frontend = one_pod(kubelet, "shop", "frontend-", t);
        let api = one_pod(kubelet, "shop", "api-", t);
        let db = one_pod(kubelet, "shop", "db-0", t);
        let dns = one_pod(kubelet, "kube-system", "coredns-", t);
        let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let servers = (
            TcpServer::start(&api.netns, any(8080)),
            TcpServer::start(&db.netns, any(5432)),
            UdpServer::start(&dns.netns, any(53)),
            TcpServer::start(
                &kubelet.fabric.externals_ns(),
                SocketAddr::new(IpAddr::V4(PAYMENTS), 443),
            ),
        );
        Self {
            frontend,
            api,
            db,
            dns,
            _servers: servers,
        }
    }

    /// The app's traffic, each connection once: DNS through the kube-dns ClusterIP, the
    /// frontend to the api through its ClusterIP, the api to the db pod across nodes, and the
    /// api to the payment provider.
    pub fn traffic(&self) {
        let dns = SocketAddr::new(IpAddr::V4(DNS_CLUSTER_IP), 53);
        udp_request(&self.frontend.netns, dns);
        tcp_connect(
            &self.frontend.netns,
            SocketAddr::new(IpAddr::V4(API_CLUSTER_IP), 80),
        );
        udp_request(&self.api.netns, dns);
        tcp_connect(
            &self.api.netns,
            SocketAddr::new(IpAddr::V4(self.db.ipv4()), 5432),
        );
        tcp_connect(&self.api.netns, SocketAddr::new(IpAddr::V4(PAYMENTS), 443));
    }
}
