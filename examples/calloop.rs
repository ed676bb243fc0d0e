//! evetcd inside a [calloop](https://docs.rs/calloop) event loop: the client as a calloop
//! `EventSource` ([`EtcdSource`]), beside a calloop `Timer` that ticks three times and starts a
//! put on each tick (work started outside the client's callbacks). A watch sees the puts;
//! then a read, the watch's cancel and a cleanup, and the loop stops once the work is done
//! and the client is idle.
//!
//! `cargo run --example calloop -- [ENDPOINT]` (default `127.0.0.1:2379`).

use calloop::generic::{FdWrapper, Generic};
use calloop::timer::{TimeoutAction, Timer};
use calloop::{EventLoop, EventSource, Interest, Mode, Poll, PostAction, Readiness, Token};
use calloop::{LoopHandle, RegistrationToken, TokenFactory};
use evetcd::{Client, Config, DeleteOptions, EventType, GetOptions, PutOptions, Watch};
use evetcd::{WatchOptions, WatchResponse};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// A [`Client`] as a calloop event source. It turns the client (`process()`) when the
/// client's fd is readable or when its timer fires, and re-arms the timer from
/// `next_timeout()` after every turn. Its callback runs after each turn, with the client.
///
/// Operations started from the client's own callbacks are covered by that re-arming. After
/// starting operations anywhere else (before the loop runs, or from another source's
/// callback), call `LoopHandle::update` with this source's token: it re-arms the timer, which
/// is then due at once. (Not `before_sleep`: calloop 0.14 adds a source with lifecycle events
/// to its before-sleep list again on every re-registration, so the list would grow each turn.)
struct EtcdSource {
    client: Client,
    /// The client's epoll fd, level-triggered: readable while the client has news unread.
    fd: Generic<FdWrapper<Client>>,
    /// Armed at `next_timeout()`; not registered while that is `None`.
    timer: Timer,
}

impl EtcdSource {
    /// A source that drives `client` (and every clone and view of it).
    fn new(client: &Client) -> EtcdSource {
        // SAFETY: the fd is the client's epoll fd, open as long as the client lives, and
        // the wrapper holds a handle on that client.
        let fd = unsafe { FdWrapper::new(client.clone()) };
        EtcdSource {
            client: client.clone(),
            fd: Generic::new(fd, Interest::READ, Mode::Level),
            timer: Timer::immediate(),
        }
    }

    /// Arms the timer at `next_timeout()`, or leaves it unregistered when that is `None`.
    fn arm(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        self.timer.unregister(poll)?;
        if let Some(timeout) = self.client.next_timeout() {
            self.timer.set_duration(timeout);
            self.timer.register(poll, tokens)?;
        }
        Ok(())
    }
}

impl EventSource for EtcdSource {
    /// One turn of the client is done: its due callbacks have run.
    type Event = ();
    type Metadata = Client;
    type Ret = ();
    type Error = io::Error;

    fn process_events<F>(
        &mut self,
        readiness: Readiness,
        token: Token,
        mut callback: F,
    ) -> io::Result<PostAction>
    where
        F: FnMut((), &mut Client),
    {
        let mut due = false;
        self.fd.process_events(readiness, token, |_, _| {
            due = true;
            Ok(PostAction::Continue)
        })?;
        self.timer.process_events(readiness, token, |_, _| {
            due = true;
            TimeoutAction::Drop // re-armed below
        })?;
        if !due {
            return Ok(PostAction::Continue);
        }
        self.client.process(); // runs the client's due callbacks
        callback((), &mut self.client);
        // The turn, and the operations its callbacks started, moved next_timeout(): calloop
        // calls reregister, which re-arms the timer.
        Ok(PostAction::Reregister)
    }

    fn register(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        self.fd.register(poll, tokens)?;
        self.arm(poll, tokens)
    }

    fn reregister(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        // Tokens come from the factory in the same order as in register.
        self.fd.reregister(poll, tokens)?;
        self.arm(poll, tokens)
    }

    fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        self.fd.unregister(poll)?;
        self.timer.unregister(poll)
    }
}

const TICKS: u32 = 3;
const TICK: Duration = Duration::from_millis(20);

/// What the callbacks share.
#[derive(Clone)]
struct App {
    client: Client,
    handle: LoopHandle<'static, ()>,
    /// The client's source, re-armed after operations started outside its callbacks.
    etcd: RegistrationToken,
    /// The sequence is over (done or failed): the loop stops once the client is idle.
    done: Rc<Cell<bool>>,
}

fn main() {
    let endpoint = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:2379".into());
    let client = Client::new(Config::new().endpoints([endpoint.clone()])).expect("config");
    println!("calloop example against {endpoint}");

    let mut event_loop: EventLoop<'static, ()> = EventLoop::try_new().expect("event loop");
    let handle = event_loop.handle();
    let signal = event_loop.get_signal();
    let done = Rc::new(Cell::new(false));
    let turns = Rc::new(Cell::new(0u32));

    // The client's source: after each turn, stop once the sequence is done and nothing is
    // pending (a real program would go on serving its other sources instead).
    let (d, t) = (done.clone(), turns.clone());
    let etcd = handle
        .insert_source(EtcdSource::new(&client), move |(), client, _| {
            t.set(t.get() + 1);
            if d.get() && client.is_idle() {
                signal.stop();
            }
        })
        .expect("insert the client");
    let app = App { client, handle, etcd, done };

    let watch: Rc<RefCell<Option<Watch>>> = Rc::default();
    let (a, w, puts) = (app.clone(), watch.clone(), Cell::new(0));
    let opts = WatchOptions::new().prefix(true);
    *watch.borrow_mut() = Some(app.client.watch("calloop/", opts, move |res| {
        let resp = match res {
            Ok(resp) => resp,
            Err(e) => return fail(&a.done, format!("watch failed: {e}")),
        };
        if resp.created {
            let from = resp.header.map_or(0, |h| h.revision) + 1;
            println!("watching calloop/ from revision {from}");
            return start_ticking(&a);
        }
        puts.set(puts.get() + print_events(&resp));
        if puts.get() == TICKS {
            read_back(&a, w.clone());
        }
    }));
    // Started outside the source's callbacks: re-arm its timer (now due at once).
    app.handle.update(&app.etcd).expect("re-arm the client's timer");

    event_loop.run(None, &mut (), |_| {}).expect("dispatch");
    println!("loop stopped after {} client turns; idle: {}", turns.get(), app.client.is_idle());
}

/// A calloop timer that ticks [`TICKS`] times, [`TICK`] apart, starting a put on each tick.
fn start_ticking(app: &App) {
    let (handle, app, n) = (app.handle.clone(), app.clone(), Cell::new(0));
    let ticker = move |_, _: &mut (), _: &mut ()| {
        n.set(n.get() + 1);
        let key = format!("calloop/tick/{}", n.get());
        println!("tick {}: put {key}", n.get());
        let done = app.done.clone();
        app.client.put(key, n.get().to_string(), PutOptions::new(), move |res| {
            if let Err(e) = res {
                fail(&done, format!("put failed: {e}"));
            }
        });
        // Another source's callback started an operation: re-arm the client's timer.
        app.handle.update(&app.etcd).expect("re-arm the client's timer");
        if n.get() < TICKS {
            TimeoutAction::ToDuration(TICK)
        } else {
            TimeoutAction::Drop
        }
    };
    handle.insert_source(Timer::from_duration(TICK), ticker).expect("insert the ticker");
}

/// Prints each event of a watch response; returns how many were puts.
fn print_events(resp: &WatchResponse) -> u32 {
    let mut puts = 0;
    for ev in &resp.events {
        let kv = ev.kv.as_ref().expect("an event has its key");
        let key = String::from_utf8_lossy(&kv.key);
        match ev.r#type() {
            EventType::Put => {
                puts += 1;
                println!("watch: put {key} = {}", String::from_utf8_lossy(&kv.value));
            }
            EventType::Delete => println!("watch: delete {key}"),
        }
    }
    puts
}

/// Reads the ticks' keys back, cancels the watch, deletes the keys and marks the sequence
/// done, each step from the previous step's callback (no re-arming needed there).
fn read_back(app: &App, watch: Rc<RefCell<Option<Watch>>>) {
    let (c, done) = (app.client.clone(), app.done.clone());
    app.client.get("calloop/tick/", GetOptions::new().prefix(true), move |res| {
        let got = match res {
            Ok(got) => got,
            Err(e) => return fail(&done, format!("get failed: {e}")),
        };
        println!("get calloop/tick/: {} keys", got.count);
        let watch = watch.borrow_mut().take().expect("the watch is live");
        watch.cancel(move |_| {
            println!("watch cancelled");
            c.delete("calloop/", DeleteOptions::new().prefix(true), move |res| {
                match res {
                    Ok(del) => println!("deleted {} keys", del.deleted),
                    Err(e) => eprintln!("delete failed: {e}"),
                }
                done.set(true);
            });
        });
    });
}

/// Reports a failure and ends the sequence (the loop stops once the client is idle).
fn fail(done: &Rc<Cell<bool>>, message: String) {
    eprintln!("{message} (is etcd running at that endpoint?)");
    done.set(true);
}
