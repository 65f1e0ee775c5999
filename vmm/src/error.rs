//! How pv-vmm and pv-remote print an error: the error and each of its causes, on one line.

/// `e` and its causes on one line, `: ` between them; a cause whose text the line already
/// holds (an error that prints its source itself) is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{what}")]
    struct Layer {
        what: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layers(names: &[&'static str]) -> Layer {
        names
            .iter()
            .rev()
            .fold(None, |source, what| {
                Some(Layer {
                    what,
                    source: source.map(Box::new),
                })
            })
            .expect("at least one layer")
    }

    #[test]
    fn every_cause_follows_its_error() {
        assert_eq!(
            chain(&layers(&["create the VM", "KVM_CREATE_VM", "EBUSY"])),
            "create the VM: KVM_CREATE_VM: EBUSY"
        );
        assert_eq!(chain(&layers(&["alone"])), "alone");
    }

    #[test]
    fn a_cause_the_error_already_prints_is_not_repeated() {
        assert_eq!(
            chain(&layers(&["open kernel: No such file", "No such file"])),
            "open kernel: No such file"
        );
    }
}
