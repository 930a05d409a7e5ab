//! Keeping every instance's copies in memory fresh: one connection of its own LISTENs on
//! `osie_machines`, `osie_state` and `osie_leases`, which every write NOTIFYs in its
//! transaction (delivered at commit, in commit order). Notifications that arrive together are
//! handled together: the inventory read once, the states and leases named read in one query
//! each. When the connection is lost, it is made again (after 1 s, doubling to 30 s) and
//! everything is read again, since notifications sent meanwhile are lost; no polling
//! otherwise.

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use osie_api::MacAddr;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls, Notification};

use super::bridge::describe;
use super::{leases, machines, state, Shared};

const LISTEN: &str = "LISTEN osie_machines; LISTEN osie_state; LISTEN osie_leases";

/// A connection listening on the channels, and its notifications (closed when it ends).
async fn connect(
    pg: &tokio_postgres::Config,
) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<Notification>)> {
    let (client, mut conn) = pg.connect(NoTls).await.map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("database: the notification connection failed: {}", describe(&e));
                    return;
                }
            }
        }
    });
    client.batch_execute(LISTEN).await.map_err(|e| anyhow::anyhow!("LISTEN: {}", describe(&e)))?;
    Ok((client, rx))
}

/// What a batch of notifications asks to read again.
#[derive(Default)]
struct Todo {
    machines: bool,
    states: BTreeSet<MacAddr>,
    leases: Vec<leases::Changed>,
}

impl Todo {
    fn add(&mut self, n: &Notification) {
        match n.channel() {
            machines::CHANNEL => self.machines = true,
            state::CHANNEL => match n.payload().parse() {
                Ok(k) => {
                    self.states.insert(k);
                }
                Err(_) => tracing::warn!(payload = n.payload(), "database: a state notification names no MAC"),
            },
            leases::CHANNEL => match serde_json::from_str(n.payload()) {
                Ok(c) => self.leases.push(c),
                Err(e) => tracing::warn!(payload = n.payload(), "database: an undecodable lease notification: {e}"),
            },
            _ => {}
        }
    }
}

/// Listen until the storage is dropped. `ready` gets the outcome of the first connection
/// and full read (the storage is not served before).
pub async fn run(shared: Weak<Shared>, ready: oneshot::Sender<Result<()>>) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(s) = shared.upgrade() else { return };
        let pg = s.bridge.pg.clone();
        let connected = async {
            let (client, rx) = connect(&pg).await?;
            // Listening first, then reading: nothing that changes in between is missed.
            s.reload_all().await?;
            Ok::<_, anyhow::Error>((client, rx))
        }
        .await;
        drop(s);
        let (client, mut rx) = match connected {
            Ok(c) => c,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::warn!(retry_in = ?backoff, "database: cannot listen for changes: {e:#}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        match ready.take() {
            Some(r) => {
                let _ = r.send(Ok(()));
            }
            None => tracing::info!("database: listening for changes again; everything read again"),
        }
        backoff = Duration::from_secs(1);
        while let Some(first) = rx.recv().await {
            let mut todo = Todo::default();
            todo.add(&first);
            while let Ok(n) = rx.try_recv() {
                todo.add(&n);
            }
            let Some(s) = shared.upgrade() else { return };
            if let Err(e) = s.apply(todo).await {
                tracing::warn!("database: reading a change: {e:#}");
            }
        }
        drop(client);
        tracing::warn!("database: the connection that listens for changes closed; reconnecting");
    }
}

impl Shared {
    async fn apply(&self, todo: Todo) -> Result<()> {
        let c = self.bridge.client().await?;
        if todo.machines {
            self.reload_machines(&c).await?;
        }
        if !todo.states.is_empty() {
            let keys: Vec<MacAddr> = todo.states.into_iter().collect();
            self.states.load(&c, Some(&keys)).await?;
        }
        for ch in &todo.leases {
            self.leases.refresh(&c, ch).await?;
        }
        Ok(())
    }
}
