//! The adapter's futures and streams, fed by hand-held callbacks (no client, no loop).

use super::*;
use crate::error::Code;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Counter>, Waker) {
    let c = Arc::new(Counter::default());
    (c.clone(), Waker::from(c))
}

fn wakes(c: &Counter) -> usize {
    c.0.load(Ordering::SeqCst)
}

fn poll<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

fn next<S: Stream + Unpin>(s: &mut S, waker: &Waker) -> Poll<Option<S::Item>> {
    Pin::new(s).poll_next(&mut Context::from_waker(waker))
}

fn err(code: Code) -> EtcdError {
    EtcdError::new(code, "test", "test")
}

/// A callback the test holds, to answer when it likes.
type Held<T> = Rc<RefCell<Option<Callback<T, EtcdError>>>>;

fn held_call<T: 'static>() -> (Held<T>, CallFuture<T>) {
    let held: Held<T> = Rc::default();
    let h = held.clone();
    let fut = call(move |done| *h.borrow_mut() = Some(done));
    (held, fut)
}

#[test]
fn a_future_resolves_once_with_the_callback_answer_and_wakes_its_task() {
    let (held, mut fut) = held_call::<u32>();
    let (count, waker) = counter();
    assert!(poll(&mut fut, &waker).is_pending());
    assert!(poll(&mut fut, &waker).is_pending(), "polling again keeps waiting");
    assert_eq!(wakes(&count), 0);
    let done = held.borrow_mut().take().expect("the operation got its callback");
    done(Ok(7));
    assert_eq!(wakes(&count), 1, "the answer wakes the task once");
    assert!(!fut.is_terminated());
    assert!(matches!(poll(&mut fut, &waker), Poll::Ready(Ok(7))));
    assert!(fut.is_terminated());
}

#[test]
fn the_latest_task_is_woken_and_an_answer_before_any_poll_is_kept() {
    let (held, mut fut) = held_call::<u32>();
    let (first, w1) = counter();
    let (second, w2) = counter();
    assert!(poll(&mut fut, &w1).is_pending());
    assert!(poll(&mut fut, &w2).is_pending());
    (held.borrow_mut().take().unwrap())(Err(err(Code::NotFound)));
    assert_eq!((wakes(&first), wakes(&second)), (0, 1));
    match poll(&mut fut, &w2) {
        Poll::Ready(Err(e)) => assert_eq!(e.code(), Code::NotFound),
        other => panic!("{other:?}"),
    }
    // Answered before it was ever polled: ready at the first poll, no wake needed.
    let (held, mut fut) = held_call::<u32>();
    (held.borrow_mut().take().unwrap())(Ok(1));
    assert!(matches!(poll(&mut fut, &w1), Poll::Ready(Ok(1))));
}

#[test]
#[should_panic(expected = "polled after it resolved")]
fn a_resolved_future_is_not_polled_again() {
    let (held, mut fut) = held_call::<u32>();
    (held.borrow_mut().take().unwrap())(Ok(1));
    let (_, waker) = counter();
    let _ = poll(&mut fut, &waker);
    let _ = poll(&mut fut, &waker);
}

#[test]
fn a_future_dropped_before_its_answer_aborts_and_ignores_the_answer() {
    let aborted = Rc::new(Cell::new(0));
    let held: Held<u32> = Rc::default();
    let (a, h) = (aborted.clone(), held.clone());
    let fut = call_abortable(move |done| {
        *h.borrow_mut() = Some(done);
        Some(Box::new(move || a.set(a.get() + 1)) as Abort)
    });
    drop(fut);
    assert_eq!(aborted.get(), 1);
    // The answer (CANCELLED, typically) still comes, to nobody.
    (held.borrow_mut().take().unwrap())(Err(err(Code::Cancelled)));
    // Answered, resolved or not, there is nothing to abort.
    for poll_first in [false, true] {
        let held: Held<u32> = Rc::default();
        let (a, h) = (aborted.clone(), held.clone());
        let mut fut = call_abortable(move |done| {
            *h.borrow_mut() = Some(done);
            Some(Box::new(move || a.set(a.get() + 1)) as Abort)
        });
        (held.borrow_mut().take().unwrap())(Ok(3));
        if poll_first {
            let (_, waker) = counter();
            assert!(poll(&mut fut, &waker).is_ready());
        }
        drop(fut);
    }
    assert_eq!(aborted.get(), 1);
}

#[test]
fn a_future_without_an_abort_drops_the_answer() {
    let (held, fut) = held_call::<String>();
    drop(fut);
    (held.borrow_mut().take().unwrap())(Ok("ignored".into()));
}

/// A stream's callback, held by the test.
type HeldItems = Rc<RefCell<Option<ItemCallback<u32, EtcdError>>>>;

/// A stream whose callback the test holds, and how often it was aborted.
fn held_stream() -> (HeldItems, Rc<Cell<u32>>, ResponseStream<u32>) {
    let held: HeldItems = Rc::default();
    let aborted = Rc::new(Cell::new(0));
    let (h, a) = (held.clone(), aborted.clone());
    let s = stream(Result::is_err, move |callback| {
        *h.borrow_mut() = Some(callback);
        Box::new(move || a.set(a.get() + 1))
    });
    (held, aborted, s)
}

#[test]
fn a_stream_yields_in_order_and_ends_after_its_error() {
    let (held, aborted, mut s) = held_stream();
    let (count, waker) = counter();
    assert!(next(&mut s, &waker).is_pending());
    let feed = |item| (held.borrow_mut().as_mut().unwrap())(item);
    feed(Ok(1));
    feed(Ok(2));
    assert_eq!(wakes(&count), 1, "the waiting task is woken once, then it polls");
    assert_eq!(s.size_hint(), (2, None));
    assert!(matches!(next(&mut s, &waker), Poll::Ready(Some(Ok(1)))));
    assert!(matches!(next(&mut s, &waker), Poll::Ready(Some(Ok(2)))));
    assert!(next(&mut s, &waker).is_pending());
    feed(Err(err(Code::OutOfRange)));
    feed(Ok(3)); // nothing comes after the last item
    assert_eq!(wakes(&count), 2);
    assert_eq!(s.size_hint(), (1, Some(1)));
    assert!(matches!(next(&mut s, &waker), Poll::Ready(Some(Err(_)))));
    assert!(!s.is_terminated());
    assert!(matches!(next(&mut s, &waker), Poll::Ready(None)));
    assert!(s.is_terminated());
    assert!(matches!(next(&mut s, &waker), Poll::Ready(None)), "fused");
    drop(s);
    assert_eq!(aborted.get(), 0, "an ended stream has nothing to cancel");
}

#[test]
fn a_stream_dropped_before_its_end_cancels_and_later_items_go_nowhere() {
    let (held, aborted, s) = held_stream();
    (held.borrow_mut().as_mut().unwrap())(Ok(1));
    drop(s);
    assert_eq!(aborted.get(), 1);
    (held.borrow_mut().as_mut().unwrap())(Ok(2));
    // Its last item already delivered (not yet taken): nothing to cancel.
    let (held, aborted, s) = held_stream();
    (held.borrow_mut().as_mut().unwrap())(Err(err(Code::Cancelled)));
    drop(s);
    assert_eq!(aborted.get(), 0);
}

#[test]
fn a_custom_last_item_ends_the_stream() {
    let held: HeldItems = Rc::default();
    let h = held.clone();
    let is_last = |r: &Result<u32, EtcdError>| r.as_ref().map_or(true, |n| *n == 0);
    let mut s = stream(is_last, move |callback| {
        *h.borrow_mut() = Some(callback);
        Box::new(|| panic!("an ended stream is not cancelled"))
    });
    for n in [2, 1, 0] {
        (held.borrow_mut().as_mut().unwrap())(Ok(n));
    }
    let (_, waker) = counter();
    let mut got = Vec::new();
    while let Poll::Ready(Some(item)) = next(&mut s, &waker) {
        got.push(item.unwrap());
    }
    assert_eq!(got, [2, 1, 0]);
    assert!(s.is_terminated());
}
