//! [`Cancel`], the token a caller hands to a long operation to stop it early (the binary cancels it
//! on Ctrl-C).
//!
//! The libraries never read a process-wide flag: each operation's options carry a `Cancel`, and the
//! operation checks it before it starts anything new and races what it has in flight against
//! [`Cancel::cancelled`]. What an operation does when cancelled is its own rule (the sync executor
//! records what finished and lets go of the lock; a push never writes its manifest) and ends in that
//! crate's `Error::Cancelled`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// A cancellation token: clones share one flag. Cancelling is for good (there is no reset).
///
/// ```
/// use snapsync_core::Cancel;
///
/// let cancel = Cancel::new();
/// let handed_out = cancel.clone();
/// assert!(!handed_out.is_cancelled());
/// cancel.cancel();
/// assert!(handed_out.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    next: AtomicU64,
    /// The tasks waiting in [`Cancel::cancelled`], by the id of their future.
    waiting: Mutex<HashMap<u64, Waker>>,
}

impl fmt::Debug for Cancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Cancel {
    /// A token not cancelled yet.
    #[must_use]
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels: every clone says so from now on, and every [`Cancel::cancelled`] future completes.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let waiting = std::mem::take(&mut *self.inner.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in waiting.into_values() {
            waker.wake();
        }
    }

    /// Whether [`Cancel::cancel`] was called on this token or a clone.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// A future that completes once the token is cancelled (at once if it is already): race work in
    /// flight against it to abandon that work.
    pub fn cancelled(&self) -> Cancelled<'_> {
        Cancelled {
            cancel: self,
            id: self.inner.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// The future of [`Cancel::cancelled`].
#[derive(Debug)]
#[must_use = "a future does nothing unless polled"]
pub struct Cancelled<'a> {
    cancel: &'a Cancel,
    id: u64,
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = &self.cancel.inner;
        if inner.cancelled.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        let mut waiting = inner.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: a cancel in between has taken the wakers already.
        if inner.cancelled.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        waiting.insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        // A future dropped before the cancel (its work finished first) is forgotten.
        self.cancel
            .inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_future_is_woken_by_the_cancel_and_then_ready() {
        let cancel = Cancel::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut waiting = Box::pin(cancel.cancelled());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        cancel.clone().cancel();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(waiting.as_mut().poll(&mut cx).is_ready());
        // Once cancelled, a new future is ready at once.
        assert!(Box::pin(cancel.cancelled()).as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_dropped_future_leaves_no_waker_behind() {
        let cancel = Cancel::new();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut waiting = Box::pin(cancel.cancelled());
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
        }
        assert!(cancel.inner.waiting.lock().unwrap().is_empty());
    }
}
