//! Leader election with a Lease (`coordination.k8s.io/v1`) in the home namespace, so that
//! control plane replicas are safe together: every replica serves OpAMP and the UI, and only
//! the one holding the Lease writes to the cluster. The holder renews it every 2 s; another
//! replica takes it once it has gone 15 s without renewal, or at once when the holder resigns
//! as it stops. A replica that cannot renew stops writing straight away.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::{Notify, watch};

/// The Lease's name.
pub const LEASE: &str = "odigos-control-plane";
/// How long a Lease holds unrenewed.
const HOLD: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// A replica competing for the Lease.
pub struct Candidate {
    leading: watch::Receiver<bool>,
    resign: watch::Sender<bool>,
    competing: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Candidate {
    /// Competes for the Lease as `identity`; `woken` is notified when this replica starts
    /// to lead.
    pub fn compete(api: Api<Lease>, identity: String, woken: Arc<Notify>) -> Candidate {
        let (leading, receiver) = watch::channel(false);
        let (resign, mut resigned) = watch::channel(false);
        let competing = tokio::spawn(async move {
            loop {
                let leads = match claim(&api, &identity).await {
                    Ok(leads) => leads,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the leader Lease; not writing to the cluster");
                        false
                    }
                };
                if leads != *leading.borrow() {
                    tracing::info!(identity, leads, "leadership changed");
                    leading.send_replace(leads);
                    if leads {
                        woken.notify_one();
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                    _ = resigned.changed() => break,
                }
            }
            if leading.send_replace(false) {
                let _ = release(&api, &identity).await;
            }
        });
        Candidate {
            leading: receiver,
            resign,
            competing: std::sync::Mutex::new(Some(competing)),
        }
    }

    pub fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// Stops competing and lets the Lease go if held, so another replica leads at once.
    pub async fn resign(&self) {
        let _ = self.resign.send(true);
        let competing = self.competing.lock().unwrap().take();
        if let Some(competing) = competing {
            let _ = tokio::time::timeout(Duration::from_secs(5), competing).await;
        }
    }
}

/// Takes or renews the Lease when it is free, expired or ours; whether we hold it now. A
/// replace carries the version read, so of two replicas racing for it one loses with 409.
async fn claim(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(lease) = api.get_opt(LEASE).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(held(identity, now, None, 0)),
        };
        return lost_race(api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(identity);
    let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
        let hold = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(HOLD).into());
        renewed.0.checked_add(hold).is_ok_and(|until| until < now)
    });
    if !(ours || free || expired) {
        return Ok(false);
    }
    let (acquired, transitions) = match ours {
        true => (spec.acquire_time, spec.lease_transitions.unwrap_or(0)),
        false => (None, spec.lease_transitions.unwrap_or(0) + 1),
    };
    let renewed = Lease {
        spec: Some(held(identity, now, acquired, transitions)),
        ..lease
    };
    lost_race(api.replace(LEASE, &PostParams::default(), &renewed).await)
}

fn held(
    identity: &str,
    now: Timestamp,
    acquired: Option<MicroTime>,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.into()),
        lease_duration_seconds: Some(HOLD),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// A write that another replica's beat is not an error: it just leads.
fn lost_race(written: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lets the Lease go, so another replica takes it without waiting for it to expire.
async fn release(api: &Api<Lease>, identity: &str) -> Result<(), kube::Error> {
    let Some(lease) = api.get_opt(LEASE).await? else {
        return Ok(());
    };
    let Some(mut spec) = lease.spec.clone() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    let released = Lease {
        spec: Some(spec),
        ..lease
    };
    api.replace(LEASE, &PostParams::default(), &released)
        .await
        .map(drop)
}
