//! The admin policy kinds of the network-policy-api project as kube-rs resources, so that the
//! inventory can watch them when their CRDs are installed: ClusterNetworkPolicy (v1alpha2),
//! AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1). Their spec is kept as JSON
//! and converted by [`crate::policy::AdminPolicy`] at snapshot time.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};

use crate::policy::{
    AdminPolicy, PolicyError,
    admin::{AdminObject, AnpSpec, CnpSpec},
};

/// The API group of all three kinds.
pub const GROUP: &str = "policy.networking.k8s.io";

macro_rules! admin_resource {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $version:literal, $plural:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, Deserialize, Serialize)]
        pub struct $name {
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: serde_json::Value,
        }

        impl Resource for $name {
            type DynamicType = ();
            type Scope = k8s_openapi::ClusterResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

admin_resource!(
    /// `ClusterNetworkPolicy`, `policy.networking.k8s.io/v1alpha2`.
    ClusterNetworkPolicyRes,
    "ClusterNetworkPolicy",
    "v1alpha2",
    "clusternetworkpolicies"
);
admin_resource!(
    /// `AdminNetworkPolicy`, `policy.networking.k8s.io/v1alpha1`.
    AdminNetworkPolicyRes,
    "AdminNetworkPolicy",
    "v1alpha1",
    "adminnetworkpolicies"
);
admin_resource!(
    /// `BaselineAdminNetworkPolicy`, `policy.networking.k8s.io/v1alpha1`.
    BaselineAdminNetworkPolicyRes,
    "BaselineAdminNetworkPolicy",
    "v1alpha1",
    "baselineadminnetworkpolicies"
);

fn spec<S: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<Option<S>, PolicyError> {
    if v.is_null() {
        return Ok(None);
    }
    serde_json::from_value(v.clone())
        .map(Some)
        .map_err(|e| PolicyError::InvalidValue {
            field: "spec".into(),
            value: e.to_string(),
            expected: "the shape of the API's spec",
        })
}

impl ClusterNetworkPolicyRes {
    pub fn to_policy(&self) -> Result<AdminPolicy, PolicyError> {
        AdminPolicy::from_cnp(&AdminObject::<CnpSpec> {
            api_version: format!("{GROUP}/v1alpha2"),
            kind: "ClusterNetworkPolicy".into(),
            metadata: self.metadata.clone(),
            spec: spec(&self.spec)?,
        })
    }
}

impl AdminNetworkPolicyRes {
    pub fn to_policy(&self) -> Result<AdminPolicy, PolicyError> {
        AdminPolicy::from_v1alpha1(
            &AdminObject::<AnpSpec> {
                api_version: format!("{GROUP}/v1alpha1"),
                kind: "AdminNetworkPolicy".into(),
                metadata: self.metadata.clone(),
                spec: spec(&self.spec)?,
            },
            false,
        )
    }
}

impl BaselineAdminNetworkPolicyRes {
    pub fn to_policy(&self) -> Result<AdminPolicy, PolicyError> {
        AdminPolicy::from_v1alpha1(
            &AdminObject::<AnpSpec> {
                api_version: format!("{GROUP}/v1alpha1"),
                kind: "BaselineAdminNetworkPolicy".into(),
                metadata: self.metadata.clone(),
                spec: spec(&self.spec)?,
            },
            true,
        )
    }
}
