//! The io_uring driver against the shared conformance suite (the same checks as sendmmsg),
//! plus the checks only it can make. When io_uring is unavailable on the host (disabled by
//! sysctl, seccomp, memlock), each test says so loudly and checks that `open(Auto, ..)` falls
//! back to sendmmsg instead.

use cohort_transport::conformance::{self, payload, send_all};
use cohort_transport::{
    open, uring, Dest, DriverChoice, DriverKind, Offloads, SendBatch, SocketConfig, Transport,
    TransportError,
};

/// Loopback without offloads (GSO and GRO are on by default; the offload runs set them).
fn loopback_template() -> SocketConfig {
    let mut cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
    cfg.gso = false;
    cfg.gro = false;
    cfg
}

fn make_uring(cfg: SocketConfig) -> Result<Box<dyn Transport>, TransportError> {
    open(DriverChoice::IoUring, &cfg)
}

/// True when io_uring works here; otherwise prints why and checks the Auto fallback.
fn uring_available() -> bool {
    match uring::open(&loopback_template()) {
        Ok(_) => true,
        Err(TransportError::UringUnavailable(why)) => {
            eprintln!("*** io_uring unavailable on this host, io_uring checks skipped: {why}");
            let t = open(DriverChoice::Auto, &loopback_template()).expect("fallback opens");
            assert_eq!(t.driver(), DriverKind::Mmsg);
            false
        }
        Err(other) => panic!("io_uring driver failed to open: {other}"),
    }
}

#[test]
fn uring_driver_passes_conformance_without_offloads() {
    if uring_available() {
        conformance::run_all(&make_uring, &loopback_template());
    }
}

#[test]
fn uring_reports_the_offloads_it_opened_with() {
    if uring_available() {
        let plain = make_uring(loopback_template()).unwrap();
        assert_eq!(plain.offloads_in_use(), Offloads::default());
        let mut cfg = loopback_template();
        cfg.gso = true;
        let t = uring::open(&cfg).unwrap();
        // What the kernel grants a socket here (the sendmmsg driver's probe of the same).
        let granted = cohort_transport::MmsgTransport::open(&cfg).unwrap();
        assert_eq!(
            t.offloads_in_use(),
            Offloads {
                gso: granted.opened().gso_available,
                gro: false
            },
            "GSO as granted, GRO not asked for"
        );
    }
}

#[test]
fn uring_driver_passes_conformance_with_gso_and_gro() {
    if uring_available() {
        let mut cfg = loopback_template();
        cfg.gso = true;
        cfg.gro = true;
        conformance::run_all(&make_uring, &cfg);
    }
}

#[test]
fn uring_driver_passes_conformance_with_jumbo_datagrams_and_gso() {
    if uring_available() {
        let mut cfg = loopback_template();
        cfg.datagram_bytes_max = 8_972; // a 9000 B MTU
        cfg.gso = true;
        cfg.gro = true;
        conformance::run_all(&make_uring, &cfg);
    }
}

#[test]
fn auto_picks_io_uring_when_it_works() {
    if uring_available() {
        let t = open(DriverChoice::Auto, &loopback_template()).unwrap();
        assert_eq!(t.driver(), DriverKind::IoUring);
    }
}

#[test]
fn reports_the_kernel_features_it_probed() {
    if uring_available() {
        let t = uring::open(&loopback_template()).unwrap();
        let f = t.features();
        eprintln!("io_uring features: {f:?}");
        assert!(f.send_msg && f.recv_msg && f.async_cancel);
    }
}

#[test]
fn a_gro_train_larger_than_datagrams_max_is_delivered_over_several_calls_in_order() {
    if !uring_available() {
        return;
    }
    let mut cfg = loopback_template();
    cfg.gso = true;
    cfg.gro = true;
    let mut tx = uring::open(&cfg).unwrap();
    let mut rx = uring::open(&cfg).unwrap();
    let to = Dest::Addr(rx.local_addr());
    let mut batch = SendBatch::new(32, 1472);
    let mut expected = Vec::new();
    for i in 0..32u32 {
        let buf = batch.alloc(to, 1200).unwrap();
        payload(i, 1200, buf);
        expected.push(buf.to_vec());
    }
    send_all(&mut tx, &mut batch);
    let mut got: Vec<Vec<u8>> = Vec::new();
    for _ in 0..conformance::SEND_ROUNDS_MAX {
        if got.len() == expected.len() {
            break;
        }
        rx.wait_readable(std::time::Duration::from_millis(20))
            .unwrap();
        let n = rx.recv(5, &mut |_, d| got.push(d.to_vec())).unwrap();
        assert!(n <= 5, "recv delivered {n} > datagrams_max 5");
    }
    assert_eq!(got, expected);
}

#[test]
fn dropping_a_transport_with_undelivered_datagrams_ends_its_receive_cleanly() {
    if !uring_available() {
        return;
    }
    for _ in 0..20 {
        let mut tx = uring::open(&loopback_template()).unwrap();
        let rx = uring::open(&loopback_template()).unwrap();
        let mut batch = SendBatch::new(8, 1472);
        for _ in 0..8 {
            batch
                .push(Dest::Addr(rx.local_addr()), &[1u8; 1000])
                .unwrap();
        }
        send_all(&mut tx, &mut batch);
        drop(rx); // buffers are lent to the kernel: drop must end the receive before unmapping
    }
}

#[test]
fn a_transport_opened_on_one_thread_receives_on_the_thread_it_moves_to() {
    if !uring_available() {
        return;
    }
    let mut tx = uring::open(&loopback_template()).unwrap();
    let mut rx = uring::open(&loopback_template()).unwrap();
    let to = Dest::Addr(rx.local_addr());
    let receiver = std::thread::spawn(move || {
        let mut got = 0;
        for _ in 0..conformance::SEND_ROUNDS_MAX {
            if got == 16 {
                break;
            }
            rx.wait_readable(std::time::Duration::from_millis(20))
                .unwrap();
            got += rx.recv(64, &mut |_, d| assert_eq!(d, &[7u8; 300])).unwrap();
        }
        got
    });
    // Datagrams sent before the receiver arms its receive wait in the socket.
    let mut batch = SendBatch::new(16, 1472);
    for _ in 0..16 {
        batch.push(to, &[7u8; 300]).unwrap();
    }
    send_all(&mut tx, &mut batch);
    assert_eq!(receiver.join().unwrap(), 16);
}

#[test]
fn in_deferred_mode_a_second_thread_is_refused_with_an_error_not_a_hang() {
    if !uring_available() {
        return;
    }
    let mut t = uring::open(&loopback_template()).unwrap();
    if t.features().task_run != uring::TaskRunMode::Deferred {
        eprintln!("ring not in deferred mode here; any thread may submit, nothing to check");
        return;
    }
    let to = Dest::Addr(t.local_addr());
    let mut batch = SendBatch::new(1, 1472);
    batch.push(to, &[1u8; 10]).unwrap();
    assert_eq!(t.send(&batch).unwrap(), 1);
    let err = std::thread::scope(|s| s.spawn(|| t.send(&batch)).join().unwrap()).unwrap_err();
    assert!(
        matches!(err, TransportError::Config(ref m) if m.contains("bound to thread")),
        "{err}"
    );
    // The owner still works.
    assert_eq!(t.send(&batch).unwrap(), 1);
}
