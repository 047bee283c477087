//! [`OnlyWhenWoken`]: poll a side future (watchdog, cancellation) only when it asked to be woken, not every time
//! the connection task wakes for I/O. `tokio::select!` polls every branch on every wake-up; for a busy connection
//! the side branches would otherwise cost a mutex (cancellation tokens) and timer checks per I/O event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pub(crate) struct OnlyWhenWoken<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future> OnlyWhenWoken<F> {
    pub(crate) fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Self {
            inner: Box::pin(inner),
            flag,
            waker,
        }
    }
}

impl<F: Future> Future for OnlyWhenWoken<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut inner_cx = Context::from_waker(&this.waker);
        this.inner.as_mut().poll(&mut inner_cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn completes_when_inner_is_woken() {
        let token = tokio_util::sync::CancellationToken::new();
        let t2 = token.clone();
        let f = OnlyWhenWoken::new(async move { t2.cancelled().await });
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            token.cancel();
        });
        tokio::time::timeout(Duration::from_secs(2), f)
            .await
            .unwrap();
        let sleep = OnlyWhenWoken::new(tokio::time::sleep(Duration::from_millis(10)));
        tokio::time::timeout(Duration::from_secs(2), sleep)
            .await
            .unwrap();
    }
}
