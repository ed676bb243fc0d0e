//! Election (`v3electionpb`): campaign, proclaim, leader, resign.

use crate::client::Client;
use crate::core::StreamCallback;
use crate::error::EtcdError;
use crate::grpc::codec;
use crate::handle::{Observe, Pending, StreamOptions};
use crate::namespace::Namespace;
use crate::pb::v3electionpb::{
    election_rpc, CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse,
    ProclaimRequest, ProclaimResponse, ResignRequest, ResignResponse,
};

use bytes::Bytes;

/// Checks a leader key as Proclaim and Resign need it.
fn check_leader(leader: &LeaderKey, operation: &'static str) -> Result<(), EtcdError> {
    if leader.key.is_empty() || leader.rev <= 0 || leader.lease <= 0 {
        let msg = "leader key needs a key, a revision > 0 and a lease > 0 (from election_campaign)";
        return Err(EtcdError::invalid(msg, operation));
    }
    Ok(())
}

impl Client {
    /// Campaigns in election `name` with lease `lease`, proposing `value`; waits (no
    /// deadline) until this campaign is the leader. The response's `leader` key is what
    /// [`election_proclaim`](Client::election_proclaim) and
    /// [`election_resign`](Client::election_resign) take.
    ///
    /// Lease 0 is rejected with `INVALID_ARGUMENT`; errors are never retryable (retry with a
    /// fresh lease). The returned [`Pending`] abandons the campaign.
    pub fn election_campaign(
        &self,
        name: impl Into<Bytes>,
        lease: i64,
        value: impl Into<Bytes>,
        callback: impl FnOnce(Result<CampaignResponse, EtcdError>) + 'static,
    ) -> Pending {
        if lease <= 0 {
            let msg = "election_campaign needs a lease id > 0";
            self.fail(EtcdError::invalid(msg, "election_campaign").not_retryable(), callback);
            return Pending::new(self, None);
        }
        let name = name.into();
        let Some(ns) = self.namespace() else {
            let req = CampaignRequest { name, lease, value: value.into() };
            return self.call_pending::<election_rpc::Campaign>(
                "election_campaign",
                &req,
                callback,
            );
        };
        let req = CampaignRequest { name: ns.key(&name), lease, value: value.into() };
        let callback = ns.unprefixing(Namespace::strip_campaign, callback);
        self.call_pending::<election_rpc::Campaign>("election_campaign", &req, callback)
    }

    /// Sets a new value as the leader `leader` (without a new election).
    pub fn election_proclaim(
        &self,
        mut leader: LeaderKey,
        value: impl Into<Bytes>,
        callback: impl FnOnce(Result<ProclaimResponse, EtcdError>) + 'static,
    ) {
        if let Err(e) = check_leader(&leader, "election_proclaim") {
            return self.fail(e, callback);
        }
        if let Some(ns) = self.namespace() {
            ns.leader_key(&mut leader);
        }
        let req = ProclaimRequest { leader: Some(leader), value: value.into() };
        self.call::<election_rpc::Proclaim>("election_proclaim", &req, callback);
    }

    /// The current leader of election `name`: its key-value pair (an error when there is
    /// none).
    pub fn election_leader(
        &self,
        name: impl Into<Bytes>,
        callback: impl FnOnce(Result<LeaderResponse, EtcdError>) + 'static,
    ) {
        let name = name.into();
        let Some(ns) = self.namespace() else {
            let req = LeaderRequest { name };
            return self.call::<election_rpc::Leader>("election_leader", &req, callback);
        };
        let req = LeaderRequest { name: ns.key(&name) };
        let callback = ns.unprefixing(Namespace::strip_leader, callback);
        self.call::<election_rpc::Leader>("election_leader", &req, callback);
    }

    /// Gives up leadership `leader`; the next campaigner becomes leader.
    pub fn election_resign(
        &self,
        mut leader: LeaderKey,
        callback: impl FnOnce(Result<ResignResponse, EtcdError>) + 'static,
    ) {
        if let Err(e) = check_leader(&leader, "election_resign") {
            return self.fail(e, callback);
        }
        if let Some(ns) = self.namespace() {
            ns.leader_key(&mut leader);
        }
        let req = ResignRequest { leader: Some(leader) };
        self.call::<election_rpc::Resign>("election_resign", &req, callback);
    }

    /// Observes election `name`: `callback` receives the current leader, then every change
    /// of leader or proclaimed value, in order, each once. The stream is re-opened after a
    /// connection loss (a leader already delivered is not delivered again).
    pub fn election_observe(
        &self,
        name: impl Into<Bytes>,
        callback: impl FnMut(Result<LeaderResponse, EtcdError>) + 'static,
    ) -> Observe {
        self.election_observe_with(name, StreamOptions::new(), callback)
    }

    /// [`election_observe`](Client::election_observe) with options: with
    /// `auto_reconnect(false)` the observer ends with the error of the first stream failure.
    pub fn election_observe_with(
        &self,
        name: impl Into<Bytes>,
        options: StreamOptions,
        callback: impl FnMut(Result<LeaderResponse, EtcdError>) + 'static,
    ) -> Observe {
        let name = name.into();
        let reconnect = options.reconnects();
        let (request, callback) = match self.namespace() {
            None => (LeaderRequest { name }, StreamCallback::Observe(Box::new(callback))),
            Some(ns) => {
                let callback = ns.unprefixing_each(Namespace::strip_leader, callback);
                let request = LeaderRequest { name: ns.key(&name) };
                (request, StreamCallback::Observe(Box::new(callback)))
            }
        };
        let request = codec::encode(&request);
        let key = self.with_core(|c| c.observe(request, callback, reconnect));
        Observe::new(self, key)
    }
}
