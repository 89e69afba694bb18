//! The status comment's images: what is built or reused, how each reaches
//! the deployer, and which components are left out (on request or not).

use crate::domain::Step;
use crate::domain::plan::{ImageAction, Plan};
use crate::domain::state::JobState;
use crate::quote;

use super::Snapshot;

impl Snapshot {
    /// Images built or reused for this request (base images are not listed).
    pub(super) fn images(&self) -> String {
        let Some(plan) = self.plan() else {
            return String::new();
        };
        let mut lines = Vec::new();
        for image in plan.images.iter().filter(|i| i.action != ImageAction::Base) {
            let reference = image.reference();
            let said = |verb: &str| {
                self.events.iter().any(|e| {
                    e.step == Step::Build && e.message.starts_with(&format!("{verb} {reference}"))
                })
            };
            let state = match &image.pushed {
                Some(p) if p.reused => match p.reused_since {
                    Some(at) => format!(
                        "reused (in the registry since {})",
                        super::text::human_time(at)
                    ),
                    None => "reused (in the registry)".to_string(),
                },
                Some(_) => "built".to_string(),
                None if said("reused") => "reused (in the registry)".to_string(),
                None if said("built") => "built".to_string(),
                None if matches!(self.job.state, JobState::Running | JobState::Queued) => {
                    "to build".to_string()
                }
                None => "not built".to_string(),
            };
            let how = match image.action {
                ImageAction::Overlay | ImageAction::BuildAndOverlay => {
                    let libs: Vec<String> = image
                        .steps
                        .iter()
                        .filter_map(|s| match s {
                            crate::domain::plan::BuildStep::Overlay { library, .. } => {
                                Some(library.clone())
                            }
                            _ => None,
                        })
                        .collect();
                    format!(", with {} installed", libs.join(", "))
                }
                _ => String::new(),
            };
            let to = if image.handed_to.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = image.handed_to.iter().map(|n| quote::code(n)).collect();
                format!(" → {}", names.join(", "))
            };
            lines.push(format!("- `{reference}`: {state}{how}{to}"));
        }
        let left = self.not_deployed(plan);
        if lines.is_empty() {
            return format!(
                "Images: nothing to build; every image comes from `{}`.\n{left}",
                plan.base.as_str()
            );
        }
        let others = plan.images.len() - lines.len();
        let mut out = String::from("Images:\n");
        out.push_str(&lines.join("\n"));
        out.push('\n');
        if others > 0 {
            out.push_str(&format!(
                "- the {others} other image(s) from `{}`\n",
                plan.base.as_str()
            ));
        }
        out.push_str(&left);
        out
    }

    /// "Not deployed: …", naming the components deployed on request only.
    fn not_deployed(&self, plan: &Plan) -> String {
        if plan.skip.is_empty() {
            return String::new();
        }
        let names: Vec<String> = plan
            .skip
            .iter()
            .map(|c| {
                if self.on_request.contains(c) {
                    format!("{} (on request: name it to deploy it)", quote::code(c))
                } else {
                    quote::code(c)
                }
            })
            .collect();
        format!("Not deployed: {}.\n", names.join(", "))
    }
}
