//! Local capabilities that answer undispatchable calls the way a C++ Cap'n Proto server does.
//!
//! capnp-rust's generated dispatchers fail a call to a method ordinal they do not know, or to
//! another interface, with the bare text `Method not implemented.`. The C++ runtime behind
//! bitcoin-node names the interface (as compiled into the node) and the ids it was asked for,
//! and mpspy shows that text when it reports a schema mismatch, so the test peer words it the
//! same way (observed on master bitcoin-node, type `unimplemented` in both cases):
//!
//! ```text
//! Method not implemented.; interfaceName = capnp/init.capnp:Init; typeId = 9815814193794562661; methodId = 5
//! Requested interface not implemented.; actualInterfaceName = capnp/init.capnp:Init; requestedTypeId = 15234421227331863449
//! ```
//!
//! [`new_client`] wraps the generated dispatcher in [`Strict`], which checks the ids first and
//! hands everything it knows to the generated code unchanged. The client's own servers (its
//! ThreadMap and Threads) go through it, and so do the test peer's.

use std::ops::Deref;
use std::rc::Rc;

use capnp::any_pointer;
use capnp::capability::{
    DispatchCallResult, FromClientHook, FromServer, Params, Promise, Results, Server,
};
use capnp::private::capability::ClientHook;
use capnp::traits::HasTypeId;

/// What C++ `std::exception`s look like on the wire: libmultiprocess sends
/// `Exception{type = failed, reason = "std::exception: <what()>"}`.
pub fn std_exception(what: &str) -> capnp::Error {
    capnp::Error::failed(format!("std::exception: {what}"))
}

/// A server object and what the C++ runtime would say about its interface.
pub trait Interface: Sized + 'static {
    /// The generated client type of the interface.
    type Client: FromServer<Self> + HasTypeId;
    /// The interface's display name as bitcoin-node master has it compiled in.
    const NAME: &'static str;
    /// How many methods the interface has (ordinals `0..METHODS`).
    const METHODS: u16;
}

/// A client for `server` whose unknown calls fail with the C++ runtime's texts.
pub fn new_client<S: Interface>(server: S) -> S::Client {
    new_client_from_rc(Rc::new(server))
}

/// [`new_client`] for a shared server object.
pub fn new_client_from_rc<S: Interface>(server: Rc<S>) -> S::Client {
    let Hook(hook) = capnp_rpc::new_client_from_rc::<Hook, S>(server);
    S::Client::new(hook)
}

/// An untyped capability, the client type [`Strict`] dispatchers are made for: capnp-rpc builds
/// a local capability from any `FromServer` pair, and the typed client is then made from its hook.
pub struct Hook(pub Box<dyn ClientHook>);

impl FromClientHook for Hook {
    fn new(hook: Box<dyn ClientHook>) -> Self {
        Hook(hook)
    }

    fn into_client_hook(self) -> Box<dyn ClientHook> {
        self.0
    }

    fn as_client_hook(&self) -> &dyn ClientHook {
        &*self.0
    }
}

impl<S: Interface> FromServer<S> for Hook {
    type Dispatch = Strict<S>;

    fn from_server(server: Rc<S>) -> Strict<S> {
        Strict {
            inner: <S::Client as FromServer<S>>::from_server(server),
        }
    }
}

/// The generated dispatcher of `S`, behind the C++ runtime's checks.
pub struct Strict<S: Interface> {
    inner: <S::Client as FromServer<S>>::Dispatch,
}

impl<S: Interface> Clone for Strict<S> {
    fn clone(&self) -> Self {
        Strict {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Interface> Deref for Strict<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.inner
    }
}

impl<S: Interface> Server for Strict<S> {
    fn dispatch_call(
        self,
        interface_id: u64,
        method_id: u16,
        params: Params<any_pointer::Owned>,
        results: Results<any_pointer::Owned>,
    ) -> DispatchCallResult {
        let type_id = <S::Client as HasTypeId>::TYPE_ID;
        let refused = if interface_id != type_id {
            format!(
                "Requested interface not implemented.; actualInterfaceName = {}; requestedTypeId = {interface_id}",
                S::NAME
            )
        } else if method_id >= S::METHODS {
            format!(
                "Method not implemented.; interfaceName = {}; typeId = {type_id}; methodId = {method_id}",
                S::NAME
            )
        } else {
            return self
                .inner
                .dispatch_call(interface_id, method_id, params, results);
        };
        DispatchCallResult::new(Promise::err(capnp::Error::unimplemented(refused)), false)
    }

    fn as_ptr(&self) -> usize {
        self.inner.as_ptr()
    }
}
