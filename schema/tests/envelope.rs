//! Every arm of rpc.capnp's `Message`, built with capnp-rust's generated `rpc_capnp` builders
//! (an encoder we did not write), must decode to what was put in.

use capnp::message::{Builder, HeapAllocator};
use capnp_rpc::rpc_capnp::{exception, message};
use mpspy_schema::rpc::{self, CapDescriptor, MessageTarget, Outcome, Resolution, Rpc};
use mpspy_schema::wire::{Message, Target};

fn bytes(b: &Builder<HeapAllocator>) -> Vec<u8> {
    let mut out = Vec::new();
    capnp::serialize::write_message(&mut out, b).unwrap();
    out
}

fn with<T>(b: &Builder<HeapAllocator>, f: impl FnOnce(Rpc<'_>) -> T) -> T {
    let raw = bytes(b);
    let (m, len) = Message::parse(&raw).unwrap();
    assert_eq!(len, raw.len());
    f(rpc::decode(&m).unwrap())
}

#[test]
fn call_with_promised_answer_and_every_cap_descriptor() {
    let mut b = Builder::new_default();
    {
        let mut call = b.init_root::<message::Builder>().init_call();
        call.set_question_id(7);
        call.set_interface_id(0xf9c6_8436_df3a_f39e);
        call.set_method_id(4);
        let mut pa = call.reborrow().init_target().init_promised_answer();
        pa.set_question_id(3);
        let mut ops = pa.init_transform(3);
        ops.reborrow().get(0).set_noop(());
        ops.reborrow().get(1).set_get_pointer_field(0);
        ops.reborrow().get(2).set_get_pointer_field(2);
        let mut params = call.init_params();
        params.reborrow().get_content().set_as("hello").unwrap();
        let mut table = params.init_cap_table(5);
        table.reborrow().get(0).set_sender_hosted(11);
        table.reborrow().get(1).set_sender_promise(12);
        table.reborrow().get(2).set_receiver_hosted(13);
        let mut ra = table.reborrow().get(3).init_receiver_answer();
        ra.set_question_id(14);
        ra.init_transform(1).get(0).set_get_pointer_field(1);
        table.reborrow().get(4).set_none(());
    }
    with(&b, |r| {
        let Rpc::Call(c) = r else { panic!("{r:?}") };
        assert_eq!(
            (c.question, c.interface_id, c.method_id),
            (7, 0xf9c6_8436_df3a_f39e, 4)
        );
        assert_eq!(
            c.target,
            MessageTarget::PromisedAnswer(rpc::PromisedAnswer {
                question: 3,
                path: vec![0, 2]
            })
        );
        assert_eq!(
            c.params.cap_table,
            vec![
                CapDescriptor::SenderHosted(11),
                CapDescriptor::SenderPromise(12),
                CapDescriptor::ReceiverHosted(13),
                CapDescriptor::ReceiverAnswer(rpc::PromisedAnswer {
                    question: 14,
                    path: vec![1]
                }),
                CapDescriptor::None,
            ]
        );
        let Target::List(l) = c.params.content else {
            panic!()
        };
        assert_eq!(l.bytes().unwrap(), b"hello\0");
    });
}

#[test]
fn returns_of_every_kind() {
    let mut b = Builder::new_default();
    {
        let mut ret = b.init_root::<message::Builder>().init_return();
        ret.set_answer_id(9);
        ret.set_release_param_caps(false);
        let mut e = ret.init_exception();
        e.set_reason("boom");
        e.set_type(exception::Type::Overloaded);
    }
    with(&b, |r| {
        let Rpc::Return(ret) = r else { panic!() };
        assert_eq!(ret.answer, 9);
        assert!(!ret.release_param_caps);
        let Outcome::Exception(e) = ret.outcome else {
            panic!()
        };
        assert_eq!((e.kind, e.reason.as_str()), ("overloaded", "boom"));
    });

    for (which, expect) in [(2, "canceled"), (3, "elsewhere"), (4, "take")] {
        let mut b = Builder::new_default();
        {
            let mut ret = b.init_root::<message::Builder>().init_return();
            ret.set_answer_id(1);
            match which {
                2 => ret.set_canceled(()),
                3 => ret.set_results_sent_elsewhere(()),
                _ => ret.set_take_from_other_question(77),
            }
        }
        with(&b, |r| {
            let Rpc::Return(ret) = r else { panic!() };
            assert!(ret.release_param_caps, "default true");
            match (expect, ret.outcome) {
                ("canceled", Outcome::Canceled)
                | ("elsewhere", Outcome::ResultsSentElsewhere)
                | ("take", Outcome::TakeFromOtherQuestion(77)) => {}
                (e, o) => panic!("{e}: {o:?}"),
            }
        });
    }
}

#[test]
fn finish_release_bootstrap_abort_resolve_disembargo_unimplemented() {
    let mut b = Builder::new_default();
    {
        let mut f = b.init_root::<message::Builder>().init_finish();
        f.set_question_id(5);
        f.set_release_result_caps(false);
    }
    with(&b, |r| {
        assert!(
            matches!(
                r,
                Rpc::Finish {
                    question: 5,
                    release_result_caps: false
                }
            ),
            "{r:?}"
        )
    });

    let mut b = Builder::new_default();
    {
        let mut rel = b.init_root::<message::Builder>().init_release();
        rel.set_id(3);
        rel.set_reference_count(2);
    }
    with(&b, |r| {
        assert!(matches!(r, Rpc::Release { id: 3, count: 2 }), "{r:?}")
    });

    let mut b = Builder::new_default();
    b.init_root::<message::Builder>()
        .init_bootstrap()
        .set_question_id(42);
    with(&b, |r| {
        assert!(matches!(r, Rpc::Bootstrap { question: 42 }), "{r:?}")
    });

    let mut b = Builder::new_default();
    {
        let mut a = b.init_root::<message::Builder>().init_abort();
        a.set_reason("Peer disconnected.");
        a.set_type(exception::Type::Disconnected);
    }
    with(&b, |r| {
        let Rpc::Abort(e) = r else { panic!() };
        assert_eq!(
            (e.kind, e.reason.as_str()),
            ("disconnected", "Peer disconnected.")
        );
    });

    let mut b = Builder::new_default();
    {
        let mut res = b.init_root::<message::Builder>().init_resolve();
        res.set_promise_id(8);
        res.init_cap().set_sender_hosted(9);
    }
    with(&b, |r| {
        let Rpc::Resolve {
            promise,
            resolution,
        } = r
        else {
            panic!()
        };
        assert_eq!(
            (promise, resolution),
            (8, Resolution::Cap(CapDescriptor::SenderHosted(9)))
        );
    });

    let mut b = Builder::new_default();
    {
        let mut d = b.init_root::<message::Builder>().init_disembargo();
        d.reborrow().init_target().set_imported_cap(4);
        d.init_context().set_sender_loopback(6);
    }
    with(&b, |r| {
        let Rpc::Disembargo { target, context } = r else {
            panic!()
        };
        assert_eq!(target, MessageTarget::ImportedCap(4));
        assert_eq!(context, "senderLoopback 6");
    });

    let mut b = Builder::new_default();
    {
        let inner = b.init_root::<message::Builder>().init_unimplemented();
        inner.init_bootstrap().set_question_id(2);
    }
    with(&b, |r| {
        let Rpc::Unimplemented(e) = r else { panic!() };
        assert_eq!((e.which, e.question), ("bootstrap", Some(2)));
    });
}
