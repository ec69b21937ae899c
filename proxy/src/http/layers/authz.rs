//! Authorization on an inbound listener: may this client (its mesh
//! identity, or its address) use this route? The route's policy, else the
//! listener's. Refused is `403`.

use super::Step;
use crate::http::call::{Answer, Call};
use crate::http::error::ProxyError;
use crate::policy::authz::Peer;

#[derive(Clone, Copy, Debug, Default)]
pub struct Authz;

impl<B> Step<B> for Authz {
    fn step(&self, call: &mut Call<B>) -> Option<Answer> {
        let view = &call.cx.view;
        let inbound = view.listener().inbound.as_ref()?;
        let route = view.route()?;
        let authz = route.authz.as_ref().unwrap_or(&inbound.authz);
        let down = &call.cx.down;
        let peer = Peer {
            id: down.client_id.as_deref(),
            addr: down.client.ip(),
        };
        if authz.allows(peer) {
            return None;
        }
        let client = down.client_id.as_deref().map_or_else(
            || format!("{} (no mesh identity)", down.client.ip()),
            str::to_string,
        );
        Some(Err(ProxyError::Forbidden { client }))
    }
}
