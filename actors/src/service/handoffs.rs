//! The handoff half of [`ShareService`]'s API: each call goes to the HandoffManager.

use std::time::Duration;

use ractor::RpcReplyPort;

use super::{ShareService, CALL_SLACK};
use crate::error::human;
use crate::handoff::{HandoffMsg, HandoffRequest, HandoffView};
use crate::types::HandoffId;
use crate::{Caller, ShareError};

impl ShareService {
    async fn ask_handoffs<T: Send + 'static>(
        &self,
        timeout: Duration,
        msg: impl FnOnce(RpcReplyPort<Result<T, ShareError>>) -> HandoffMsg,
    ) -> Result<T, ShareError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| ShareError::ShuttingDown)?;
        match self.handoffs.call(msg, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(ractor::rpc::CallResult::Timeout) => Err(ShareError::NoAnswer {
                actor: "handoff manager",
                after: human(timeout),
            }),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(ShareError::ShuttingDown),
        }
    }

    /// Ask to hand a terminal to another principal; the policy's approval chain
    /// decides. Returns the pending handoff (or the denial).
    pub async fn handoff_request(
        &self,
        request: HandoffRequest,
    ) -> Result<HandoffView, ShareError> {
        self.ask_handoffs(self.settings.audit_timeout * 2 + CALL_SLACK, |tx| {
            HandoffMsg::Request(request, tx)
        })
        .await
    }

    /// Approve the handoff's current step as `by`. The last approval returns the
    /// completed handoff with its package.
    pub async fn handoff_approve(
        &self,
        id: HandoffId,
        by: impl Into<Caller>,
    ) -> Result<HandoffView, ShareError> {
        let by = by.into();
        let t = self.settings.link_timeout + self.settings.audit_timeout * 2 + CALL_SLACK * 3;
        self.ask_handoffs(t, |reply| HandoffMsg::Approve { id, by, reply })
            .await
    }

    /// Deny the handoff at its current step (as that step's approver or the receiver).
    pub async fn handoff_deny(
        &self,
        id: HandoffId,
        by: impl Into<Caller>,
        reason: Option<String>,
    ) -> Result<HandoffView, ShareError> {
        let by = by.into();
        self.ask_handoffs(self.settings.audit_timeout + CALL_SLACK, |reply| {
            HandoffMsg::Deny {
                id,
                by,
                reason,
                reply,
            }
        })
        .await
    }

    /// A handoff as `caller` may see it: only its parties (requester, receiver,
    /// approvers) and the operator see it, and only the receiver and the operator see
    /// its package.
    pub async fn handoff_show(
        &self,
        id: HandoffId,
        caller: impl Into<Caller>,
    ) -> Result<HandoffView, ShareError> {
        let caller = caller.into();
        self.ask_handoffs(CALL_SLACK, |reply| HandoffMsg::Show(id, caller, reply))
            .await
    }

    /// The handoffs `caller` is a party to (all of them for the operator).
    pub async fn handoff_list(
        &self,
        caller: impl Into<Caller>,
    ) -> Result<Vec<HandoffView>, ShareError> {
        let caller = caller.into();
        self.ask_handoffs(CALL_SLACK, |reply| HandoffMsg::List(caller, reply))
            .await
    }
}
