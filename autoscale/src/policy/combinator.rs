use std::time::Duration;

use super::{Policy, PolicyInput, Recommendation};
use crate::error::{ConfigError, ConfigErrorKind};

/// Most policies a combinator holds.
const MAX_POLICIES: usize = 64;

fn check(policies: &[Box<dyn Policy>]) -> Result<(), ConfigError> {
    if policies.is_empty() || policies.len() > MAX_POLICIES {
        return Err(ConfigError::new(
            ConfigErrorKind::InvalidNumber,
            "policies",
            format!("need between 1 and {MAX_POLICIES} policies"),
        ));
    }
    Ok(())
}

/// Recommends the largest of its policies' recommendations, with that
/// policy's reason (ties go to the first). Every policy is consulted each time,
/// so stateful ones (KPA, HPA) keep their history.
///
/// ```
/// use convoy_autoscale::{LatencySlo, LatencySloConfig, Max, Policy, TargetOngoing, TargetOngoingConfig};
///
/// let policy = Max::new(vec![
///     Box::new(TargetOngoing::new(TargetOngoingConfig::default())?),
///     Box::new(LatencySlo::new(LatencySloConfig::default())?),
/// ])?;
/// assert_eq!(policy.name(), "max");
/// # Ok::<(), convoy_autoscale::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct Max {
    policies: Vec<Box<dyn Policy>>,
}

impl Max {
    /// Combines `policies` (1 to 64 of them).
    pub fn new(policies: Vec<Box<dyn Policy>>) -> Result<Self, ConfigError> {
        check(&policies)?;
        Ok(Self { policies })
    }
}

impl Policy for Max {
    fn name(&self) -> &str {
        "max"
    }

    fn horizon(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.horizon())
            .max()
            .unwrap_or_default()
    }

    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        let mut best: Option<Recommendation> = None;
        for p in &mut self.policies {
            let rec = p.decide(input);
            if best.is_none_or(|b| rec.desired > b.desired) {
                best = Some(rec);
            }
        }
        best.unwrap_or_else(|| input.hold("no_metrics"))
    }
}

/// Recommends the smallest of its policies' recommendations, with that
/// policy's reason (ties go to the first).
#[derive(Debug)]
pub struct Min {
    policies: Vec<Box<dyn Policy>>,
}

impl Min {
    /// Combines `policies` (1 to 64 of them).
    pub fn new(policies: Vec<Box<dyn Policy>>) -> Result<Self, ConfigError> {
        check(&policies)?;
        Ok(Self { policies })
    }
}

impl Policy for Min {
    fn name(&self) -> &str {
        "min"
    }

    fn horizon(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.horizon())
            .max()
            .unwrap_or_default()
    }

    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        let mut best: Option<Recommendation> = None;
        for p in &mut self.policies {
            let rec = p.decide(input);
            if best.is_none_or(|b| rec.desired < b.desired) {
                best = Some(rec);
            }
        }
        best.unwrap_or_else(|| input.hold("no_metrics"))
    }
}
