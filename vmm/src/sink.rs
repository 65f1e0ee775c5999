//! Where a thread sends what it has to tell, without knowing who listens: the vCPU threads
//! their [`VcpuEvent`](crate::vcpu::VcpuEvent)s and the API server its requests both reach
//! the main loop through one, which [`control`](crate::control) makes from its inbox.

use std::fmt;
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// One end of a one-way channel for `T`: sending says whether anybody still listens.
pub struct Sink<T>(Arc<dyn Fn(T) -> bool + Send + Sync>);

impl<T: 'static> Sink<T> {
    /// A sink that hands each item to `deliver` (false: nobody listens any more).
    pub fn new(deliver: impl Fn(T) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(deliver))
    }

    /// A sink into `sender`, each item wrapped by `wrap` (e.g. an enum variant).
    pub fn into_channel<U: Send + 'static>(sender: Sender<U>, wrap: fn(T) -> U) -> Self {
        Self::new(move |item| sender.send(wrap(item)).is_ok())
    }

    /// Sends `item`; false when nobody listens any more.
    pub fn send(&self, item: T) -> bool {
        (self.0)(item)
    }
}

impl<T> Clone for Sink<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> fmt::Debug for Sink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sink")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Wrapped {
        Number(u32),
    }

    #[test]
    fn items_reach_the_channel_wrapped_until_it_is_gone() {
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Sink::into_channel(tx, Wrapped::Number);
        assert!(sink.clone().send(7));
        assert_eq!(rx.recv().ok(), Some(Wrapped::Number(7)));
        drop(rx);
        assert!(
            !sink.send(8),
            "a channel without its receiver takes nothing"
        );
    }
}
