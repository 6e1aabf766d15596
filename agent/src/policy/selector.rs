//! Label selectors (`matchLabels` and `matchExpressions`), validated and in a canonical form so
//! that equal selectors compare and hash equal, which lets the evaluator share work between them.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::PolicyError;

/// Labels of a pod, a namespace or a node.
pub type Labels = BTreeMap<String, String>;

/// A compiled label selector. The empty selector matches every label set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// All must hold. Sorted and deduplicated; `matchLabels` entries become `In` with one value.
    requirements: Vec<Requirement>,
}

/// One requirement of a selector: a key and what its value must be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
}

/// The operators of `matchExpressions`. Value lists are sorted and deduplicated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// The label is present and its value is one of these.
    In(Vec<String>),
    /// The label is absent, or its value is none of these.
    NotIn(Vec<String>),
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl Selector {
    /// The selector that matches everything (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector made of `matchLabels` only.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let reqs = labels
            .into_iter()
            .map(|(k, v)| Requirement {
                key: k.to_owned(),
                operator: Operator::In(vec![v.to_owned()]),
            })
            .collect();
        Self::from_requirements(reqs)
    }

    /// A selector from requirements, put into canonical order.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        for r in &mut requirements {
            if let Operator::In(v) | Operator::NotIn(v) = &mut r.operator {
                v.sort();
                v.dedup();
            }
        }
        requirements.sort();
        requirements.dedup();
        Self { requirements }
    }

    /// Converts and validates a Kubernetes selector. `field` is the path of the selector in
    /// its object, used in errors.
    pub fn from_k8s(sel: &LabelSelector, field: &str) -> Result<Self, PolicyError> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            check_key(k, &format!("{field}.matchLabels"))?;
            reqs.push(Requirement {
                key: k.clone(),
                operator: Operator::In(vec![v.clone()]),
            });
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            check_key(&e.key, &format!("{at}.key"))?;
            let values = e.values.clone().unwrap_or_default();
            let operator = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(PolicyError::SelectorValues {
                        field: format!("{at}.values"),
                        operator: e.operator.clone(),
                        reason: "must be non-empty",
                    });
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(PolicyError::SelectorValues {
                        field: format!("{at}.values"),
                        operator: e.operator.clone(),
                        reason: "must be empty",
                    });
                }
                "In" => Operator::In(values),
                "NotIn" => Operator::NotIn(values),
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(PolicyError::InvalidOperator {
                        field: format!("{at}.operator"),
                        operator: other.to_owned(),
                    });
                }
            };
            reqs.push(Requirement {
                key: e.key.clone(),
                operator,
            });
        }
        Ok(Self::from_requirements(reqs))
    }

    /// Whether the selector is `{}`, which matches everything.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match (&self.operator, value) {
            (Operator::In(vs), Some(v)) => vs.iter().any(|x| x == v),
            (Operator::In(_), None) => false,
            (Operator::NotIn(vs), Some(v)) => !vs.iter().any(|x| x == v),
            (Operator::NotIn(_), None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
        }
    }
}

fn check_key(key: &str, field: &str) -> Result<(), PolicyError> {
    let name = key.rsplit('/').next().unwrap_or(key);
    if name.is_empty() || name.len() > 63 || key.split('/').count() > 2 {
        return Err(PolicyError::InvalidLabelKey {
            field: field.to_owned(),
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// kubectl's selector syntax: `app=web,tier in (a,b),!debug`; `{}` for everything.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match &r.operator {
                Operator::In(v) if v.len() == 1 => write!(f, "{}={}", r.key, v[0])?,
                Operator::In(v) => write!(f, "{} in ({})", r.key, v.join(","))?,
                Operator::NotIn(v) => write!(f, "{} notin ({})", r.key, v.join(","))?,
                Operator::Exists => write!(f, "{}", r.key)?,
                Operator::DoesNotExist => write!(f, "!{}", r.key)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    fn sel(exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::from_k8s(
            &LabelSelector {
                match_expressions: Some(exprs),
                match_labels: None,
            },
            "s",
        )
        .unwrap()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::everything().matches(&labels(&[])));
        assert!(Selector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_requires_every_pair() {
        let s = Selector::from_labels([("app", "web"), ("tier", "fe")]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let cases = [
            ("In", &["a", "b"][..], &[("k", "a")][..], true),
            ("In", &["a", "b"], &[("k", "c")], false),
            ("In", &["a"], &[], false),
            ("NotIn", &["a"], &[("k", "b")], true),
            ("NotIn", &["a"], &[("k", "a")], false),
            ("NotIn", &["a"], &[], true),
            ("Exists", &[], &[("k", "")], true),
            ("Exists", &[], &[], false),
            ("DoesNotExist", &[], &[], true),
            ("DoesNotExist", &[], &[("k", "x")], false),
        ];
        for (op, values, have, want) in cases {
            let s = sel(vec![expr("k", op, values)]);
            assert_eq!(
                s.matches(&labels(have)),
                want,
                "{op} {values:?} on {have:?}"
            );
        }
    }

    #[test]
    fn invalid_operator_is_rejected_with_its_field() {
        let err = Selector::from_k8s(
            &LabelSelector {
                match_expressions: Some(vec![expr("k", "Equals", &["a"])]),
                match_labels: None,
            },
            "spec.podSelector",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.podSelector.matchExpressions[0].operator"),
            "{err}"
        );
    }

    #[test]
    fn in_without_values_and_exists_with_values_are_rejected() {
        for (op, values) in [("In", &[][..]), ("NotIn", &[]), ("Exists", &["a"])] {
            let r = Selector::from_k8s(
                &LabelSelector {
                    match_expressions: Some(vec![expr("k", op, values)]),
                    match_labels: None,
                },
                "s",
            );
            assert!(r.is_err(), "{op} {values:?} accepted");
        }
    }

    #[test]
    fn equal_selectors_are_equal_whatever_the_order() {
        let a = sel(vec![expr("b", "In", &["2", "1"]), expr("a", "Exists", &[])]);
        let b = sel(vec![
            expr("a", "Exists", &[]),
            expr("b", "In", &["1", "2", "1"]),
        ]);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a,b in (1,2)");
    }
}
