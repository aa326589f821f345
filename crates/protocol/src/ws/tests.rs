use super::*;
use proptest::prelude::*;

fn text(b: &[u8; 20]) -> String {
    Bytes20(*b).text()
}

fn announce_frame(h: &[u8; 20], p: &[u8; 20], extra: &str) -> String {
    let mut v = serde_json::json!({"action": "announce", "info_hash": text(h), "peer_id": text(p)});
    if !extra.is_empty() {
        let e: serde_json::Value = serde_json::from_str(extra).unwrap();
        v.as_object_mut()
            .unwrap()
            .extend(e.as_object().unwrap().clone());
    }
    v.to_string()
}

#[test]
fn every_byte_value_survives_a_round_trip_through_json() {
    let mut h = [0u8; 20];
    for start in (0..=255u8).step_by(20) {
        for (i, b) in h.iter_mut().enumerate() {
            *b = start.wrapping_add(i as u8);
        }
        let frame = announce_frame(&h, &h, r#"{"left": 0}"#);
        let Ok(Request::Announce(a)) = parse(&frame) else {
            panic!("{frame}")
        };
        assert_eq!((a.info_hash.0, a.peer_id.0), (h, h));
        let reply: serde_json::Value =
            serde_json::from_str(&announce_reply(a.info_hash, 120, 1, 2)).unwrap();
        assert_eq!(reply["info_hash"].as_str().unwrap(), text(&h));
    }
}

#[test]
fn an_announce_reads_event_left_numwant_and_offers() {
    let frame = announce_frame(
        &[1; 20],
        &[2; 20],
        r#"{"event":"started","left":null,"numwant":5,"uploaded":0,"downloaded":0,
            "offers":[{"offer_id":"aaaaaaaaaaaaaaaaaaaa","offer":{"type":"offer","sdp":"v=0\r\n"}}]}"#,
    );
    let Ok(Request::Announce(a)) = parse(&frame) else {
        panic!()
    };
    assert_eq!(a.event, AnnounceEvent::Started);
    assert_eq!((a.left, a.numwant), (None, Some(5)));
    assert_eq!(a.offers.len(), 1);
    assert_eq!(a.offers[0].offer_id, Bytes20([b'a'; 20]));
    let fwd: serde_json::Value =
        serde_json::from_str(&offer(a.info_hash, a.peer_id, &a.offers[0])).unwrap();
    assert_eq!(fwd["offer"]["sdp"], "v=0\r\n");
    assert_eq!(fwd["action"], "announce");
    assert_eq!(fwd["peer_id"].as_str().unwrap(), text(&[2; 20]));
}

#[test]
fn an_answer_needs_its_target_and_offer() {
    let ok = announce_frame(
        &[1; 20],
        &[2; 20],
        r#"{"answer":{"type":"answer","sdp":"x"},"to_peer_id":"bbbbbbbbbbbbbbbbbbbb","offer_id":"cccccccccccccccccccc"}"#,
    );
    let Ok(Request::Answer(a)) = parse(&ok) else {
        panic!()
    };
    assert_eq!((a.to_peer_id.0, a.offer_id.0), ([b'b'; 20], [b'c'; 20]));
    let bad = announce_frame(&[1; 20], &[2; 20], r#"{"answer":{"type":"answer"}}"#);
    let e = parse(&bad).unwrap_err();
    assert_eq!(
        (e.kind, e.info_hash),
        (ParseErrorKind::BadAnswer, Some(InfoHash([1; 20])))
    );
}

#[test]
fn scrape_takes_one_many_or_none() {
    let one = format!(
        r#"{{"action":"scrape","info_hash":{}}}"#,
        serde_json::json!(text(&[3; 20]))
    );
    assert!(matches!(parse(&one), Ok(Request::Scrape(v)) if v == vec![InfoHash([3; 20])]));
    let many = serde_json::json!({"action":"scrape","info_hash":[text(&[3;20]), text(&[4;20])]});
    assert!(matches!(parse(&many.to_string()), Ok(Request::Scrape(v)) if v.len() == 2));
    let too_many: Vec<String> = (0..=MAX_SCRAPE).map(|_| text(&[5; 20])).collect();
    let e = parse(&serde_json::json!({"action":"scrape","info_hash":too_many}).to_string())
        .unwrap_err();
    assert_eq!(
        (e.action, e.kind),
        (Action::Scrape, ParseErrorKind::TooManyInfoHashes)
    );
    let reply: serde_json::Value = serde_json::from_str(&scrape_reply([(
        InfoHash([3; 20]),
        Counts {
            complete: 1,
            incomplete: 2,
            downloaded: 3,
        },
    )]))
    .unwrap();
    assert_eq!(reply["files"][text(&[3; 20])]["downloaded"], 3);
}

#[test]
fn bad_frames_name_their_action_and_info_hash() {
    for (frame, kind, action) in [
        ("nope", ParseErrorKind::NotJson, Action::Announce),
        (
            r#"{"action":"x"}"#,
            ParseErrorKind::UnknownAction,
            Action::Announce,
        ),
        (
            r#"{"action":"announce","info_hash":"short"}"#,
            ParseErrorKind::BadId,
            Action::Announce,
        ),
        (
            r#"{"action":"scrape","info_hash":["short"]}"#,
            ParseErrorKind::BadId,
            Action::Scrape,
        ),
        (
            &announce_frame(&[1; 20], &[2; 20], r#"{"event":"paused"}"#),
            ParseErrorKind::UnknownEvent,
            Action::Announce,
        ),
        // A code point above 255 is not a byte.
        (
            &announce_frame(&[1; 20], &[b'p'; 20], "{}")
                .replace(&text(&[b'p'; 20]), &"\u{100}".repeat(20)),
            ParseErrorKind::BadId,
            Action::Announce,
        ),
    ] {
        let e = parse(frame).unwrap_err();
        assert_eq!((e.kind, e.action), (kind, action), "{frame}");
        let f: serde_json::Value =
            serde_json::from_str(&failure(e.action, e.info_hash, e.kind.message())).unwrap();
        assert_eq!(f["action"], action.name());
        assert!(f["failure reason"].is_string());
    }
    let e = parse(&announce_frame(&[9; 20], &[2; 20], r#"{"event":"paused"}"#)).unwrap_err();
    assert_eq!(
        e.info_hash,
        Some(InfoHash([9; 20])),
        "the error frame can name the torrent"
    );
}

proptest! {
    #[test]
    fn no_frame_panics(s in ".{0,300}") {
        let _ = parse(&s);
    }

    #[test]
    fn any_twenty_bytes_round_trip(b in proptest::array::uniform20(any::<u8>())) {
        let json = serde_json::to_string(&Bytes20(b)).unwrap();
        let back: Bytes20 = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back.0, b);
    }
}

#[test]
fn stub_offers_are_skipped_not_refused() {
    let frame = announce_frame(
        &[1; 20],
        &[2; 20],
        r#"{"offers":[{"fake_offer":"fake_offer_0"},{"offer_id":"short","offer":{}},
            {"offer_id":"aaaaaaaaaaaaaaaaaaaa","offer":{"type":"offer","sdp":"x"}}]}"#,
    );
    let Ok(Request::Announce(a)) = parse(&frame) else {
        panic!()
    };
    assert_eq!(a.offers.len(), 1, "only the well-formed offer is relayed");
}
