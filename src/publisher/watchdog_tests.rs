use super::*;

const D: Duration = Duration::from_secs(5);

/// A clock the test moves by hand.
struct Clock(Instant);

impl Clock {
    fn at(&self, secs: f64) -> Instant {
        self.0 + Duration::from_secs_f64(secs)
    }
}

fn stats(brokers_up: usize, producer: Option<(i64, i16)>) -> Tick {
    Tick {
        stats: Some(Snapshot {
            brokers_up,
            producer,
            idemp_state: "Assigned".into(),
        }),
        ..Tick::default()
    }
}

fn with(tick: Tick, acked: u64, timed_out: u64) -> Tick {
    Tick {
        acked,
        timed_out,
        ..tick
    }
}

fn start() -> (Clock, Watchdog) {
    let clock = Clock(Instant::now());
    let dog = Watchdog::new(D, clock.at(0.0));
    (clock, dog)
}

#[test]
fn an_epoch_bumped_again_and_again_without_an_ack_is_a_wedge() {
    let (clock, mut dog) = start();
    assert_eq!(dog.observe(clock.at(1.0), stats(1, Some((7, 0)))), None);
    assert_eq!(dog.observe(clock.at(2.0), stats(1, Some((7, 1)))), None);
    assert_eq!(dog.observe(clock.at(3.0), stats(1, Some((7, 2)))), None);
    let wedge = dog.observe(clock.at(4.0), stats(1, Some((7, 3))));
    assert!(
        matches!(wedge, Some(Wedge::Churning { changes: 3, .. })),
        "{wedge:?}"
    );
    assert!(wedge.unwrap().to_string().contains("changed 3 times"));
}

#[test]
fn several_bumps_between_two_snapshots_count_each() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), stats(1, Some((7, 0))));
    let wedge = dog.observe(clock.at(2.0), stats(1, Some((7, 9))));
    assert!(matches!(wedge, Some(Wedge::Churning { .. })), "{wedge:?}");
}

#[test]
fn a_lost_producer_state_that_one_bump_repairs_is_no_wedge() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), with(stats(1, Some((7, 0))), 10, 0));
    // The broker forgot the producer: one bump, then deliveries go on.
    assert_eq!(dog.observe(clock.at(2.0), stats(1, Some((7, 1)))), None);
    assert_eq!(
        dog.observe(clock.at(3.0), with(stats(1, Some((7, 1))), 10, 0)),
        None
    );
    // Later bumps, each followed by acknowledgements, never add up.
    for (i, epoch) in (2..20).enumerate() {
        let at = 4.0 + i as f64;
        assert_eq!(dog.observe(clock.at(at), stats(1, Some((7, epoch)))), None);
        assert_eq!(
            dog.observe(clock.at(at + 0.5), with(Tick::default(), 3, 0)),
            None
        );
    }
}

#[test]
fn bumps_spread_over_more_than_a_delivery_timeout_are_no_wedge() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), stats(1, Some((7, 0))));
    for (i, epoch) in (1..6).enumerate() {
        let at = 4.0 + 3.0 * i as f64;
        assert_eq!(
            dog.observe(clock.at(at), stats(1, Some((7, epoch)))),
            None,
            "one change every 3 s, with a delivery timeout of 5 s"
        );
    }
}

#[test]
fn nothing_is_blamed_on_the_producer_while_no_broker_is_up() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), with(stats(1, Some((7, 0))), 5, 0));
    // The broker is down for a minute: every delivery times out, the epoch is bumped for each
    // timeout.
    for s in 2..60 {
        let tick = with(stats(0, Some((7, s as i16))), 0, 20);
        assert_eq!(dog.observe(clock.at(s as f64), tick), None, "at {s} s");
    }
    // Back, and the producer delivers.
    assert_eq!(
        dog.observe(clock.at(60.0), with(stats(1, Some((7, 60))), 8, 3)),
        None
    );
}

#[test]
fn timeouts_reported_just_after_the_cluster_returns_are_no_wedge() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), with(stats(1, Some((7, 0))), 5, 0));
    for s in 2..10 {
        dog.observe(clock.at(s as f64), with(stats(0, None), 0, 10));
    }
    // Back at 10 s; what was queued during the outage times out over the next seconds.
    for s in 10..14 {
        let tick = with(stats(1, Some((8, 0))), 0, 10);
        assert_eq!(dog.observe(clock.at(s as f64), tick), None, "at {s} s");
    }
}

#[test]
fn deliveries_timing_out_for_a_whole_delivery_timeout_while_a_broker_is_up_are_a_wedge() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), with(stats(1, Some((7, 0))), 5, 0));
    // Up all along, the producer id unchanged, nothing acknowledged: what was sent after 1 s
    // times out from 6 s on.
    for s in 2..=6 {
        assert_eq!(
            dog.observe(clock.at(s as f64), stats(1, Some((7, 0)))),
            None
        );
    }
    let wedge = dog.observe(clock.at(7.0), with(stats(1, Some((7, 0))), 0, 4));
    assert_eq!(
        wedge,
        Some(Wedge::Failing {
            failed: 4,
            for_: Duration::from_secs(6),
        })
    );
}

fn refused(tick: Tick, refused: u64) -> Tick {
    Tick { refused, ..tick }
}

#[test]
fn deliveries_refused_for_a_delivery_timeout_after_the_cluster_returned_are_a_wedge() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), with(stats(1, Some((7, 0))), 5, 0));
    for s in 2..10 {
        dog.observe(clock.at(s as f64), with(stats(0, None), 0, 3));
    }
    // Back at 10 s, with its storage but not this epoch: every produce is refused at once.
    for s in 10..15 {
        let tick = refused(stats(1, Some((7, 1))), 6);
        assert_eq!(dog.observe(clock.at(s as f64), tick), None, "at {s} s");
    }
    let wedge = dog.observe(clock.at(15.0), refused(stats(1, Some((7, 1))), 6));
    assert_eq!(
        wedge,
        Some(Wedge::Failing {
            failed: 36,
            for_: Duration::from_secs(5),
        })
    );
}

#[test]
fn refusals_while_no_broker_is_up_or_followed_by_acks_are_no_wedge() {
    let (clock, mut dog) = start();
    for s in 1..20 {
        let tick = refused(stats(0, Some((7, 0))), 6);
        assert_eq!(dog.observe(clock.at(s as f64), tick), None, "at {s} s");
    }
    for s in 20..40 {
        let tick = refused(with(stats(1, Some((7, 0))), u64::from(s % 4 == 0), 0), 6);
        assert_eq!(dog.observe(clock.at(s as f64), tick), None, "at {s} s");
    }
}

#[test]
fn one_acknowledgement_among_the_timeouts_is_progress() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), stats(1, Some((7, 0))));
    for s in 2..=10 {
        let tick = with(stats(1, Some((7, 0))), u64::from(s % 3 == 0), 4);
        assert_eq!(dog.observe(clock.at(s as f64), tick), None, "at {s} s");
    }
}

#[test]
fn a_confirmation_that_fails_restarts_the_wait_for_the_cluster() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), stats(1, Some((7, 0))));
    let tick = || with(stats(1, Some((7, 0))), 0, 2);
    dog.observe(clock.at(6.0), tick());
    assert!(dog.observe(clock.at(7.0), tick()).is_some());
    // The metadata request failed: the statistics were behind.
    dog.cluster_silent();
    assert_eq!(dog.observe(clock.at(8.0), tick()), None);
    assert_eq!(dog.observe(clock.at(12.0), tick()), None);
    assert!(dog.observe(clock.at(13.0), tick()).is_some());
}

#[test]
fn rebuilds_for_a_wedge_are_spaced_further_apart_until_one_helps() {
    let (clock, mut dog) = start();
    let churn = |dog: &mut Watchdog, from: f64| {
        let mut verdict = None;
        for (i, epoch) in (0..4).enumerate() {
            verdict = dog.observe(clock.at(from + i as f64), stats(1, Some((9, epoch))));
        }
        verdict
    };
    assert!(churn(&mut dog, 1.0).is_some());
    dog.rebuilt_for_wedge(clock.at(4.0));
    // The new producer churns too: not again within two delivery timeouts.
    assert_eq!(churn(&mut dog, 5.0), None);
    assert!(churn(&mut dog, 14.0).is_some(), "after 10 s");
    dog.rebuilt_for_wedge(clock.at(17.0));
    // Now 20 s.
    assert_eq!(churn(&mut dog, 30.0), None);
    assert!(churn(&mut dog, 37.0).is_some());
    dog.rebuilt_for_wedge(clock.at(40.0));
    // That one helped: its deliveries bring the quiet period back to two delivery timeouts
    // for the next incident, once the current one is over.
    dog.observe(clock.at(41.0), with(stats(1, Some((10, 0))), 5, 0));
    assert_eq!(
        churn(&mut dog, 70.0),
        None,
        "within 40 s of the last rebuild"
    );
    assert!(churn(&mut dog, 80.0).is_some());
    dog.rebuilt_for_wedge(clock.at(83.0));
    assert!(churn(&mut dog, 93.0).is_some(), "10 s again");
}

#[test]
fn a_replaced_producer_starts_with_a_clean_slate() {
    let (clock, mut dog) = start();
    dog.observe(clock.at(1.0), stats(1, Some((7, 0))));
    dog.observe(clock.at(2.0), stats(1, Some((7, 1))));
    dog.observe(clock.at(3.0), stats(1, Some((7, 2))));
    // A fatal error replaced it: the new producer's first id is no change.
    dog.replaced(clock.at(3.5));
    assert_eq!(dog.observe(clock.at(4.0), stats(1, Some((11, 0)))), None);
    assert_eq!(dog.observe(clock.at(5.0), stats(1, Some((11, 1)))), None);
}

#[test]
fn a_snapshot_reads_librdkafkas_statistics() {
    // Trimmed from a real statistics document of an idempotent producer (librdkafka 2.12).
    let json = br#"{
        "name": "ackgate#producer-1", "type": "producer", "ts": 1, "msg_cnt": 3,
        "brokers": {
            "GroupCoordinator": {"name": "GroupCoordinator", "nodeid": -1, "source": "logical",
                                 "state": "UP"},
            "127.0.0.1:9092/bootstrap": {"nodeid": -1, "source": "configured", "state": "INIT"},
            "127.0.0.1:9092/111": {"nodeid": 111, "source": "learned", "state": "UP",
                                   "txerrs": 0, "toppars": {}},
            ":0/internal": {"nodeid": -1, "source": "internal", "state": "UP"}
        },
        "topics": {},
        "eos": {"idemp_state": "DrainBump", "idemp_stateage": 12, "txn_state": "Init",
                "txn_stateage": 900, "txn_may_enq": false, "producer_id": 4000,
                "producer_epoch": 7, "epoch_cnt": 1}
    }"#;
    assert_eq!(
        Snapshot::parse(json).unwrap(),
        Snapshot {
            brokers_up: 1,
            producer: Some((4000, 7)),
            idemp_state: "DrainBump".into(),
        }
    );
    let without_id = br#"{"brokers": {}, "eos": {"idemp_state": "WaitPID",
        "producer_id": -1, "producer_epoch": -1}}"#;
    assert_eq!(
        Snapshot::parse(without_id).unwrap(),
        Snapshot {
            brokers_up: 0,
            producer: None,
            idemp_state: "WaitPID".into(),
        }
    );
    assert!(Snapshot::parse(b"not json").is_err());
}
