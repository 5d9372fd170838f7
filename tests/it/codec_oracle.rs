//! Cross-checks `radacctd::radius::codec` against radius-rs (`radius` 0.4) as an independent
//! implementation of RFC 2865 §3 / RFC 2866 §3 / RFC 5176 §2.3 framing and authenticators.
//! It must not test anything radius-rs does not implement: radius-rs 0.4 neither computes nor
//! checks Message-Authenticator (RFC 3579 §3.2; it only stores the raw octets), so
//! Message-Authenticator is checked only in the codec's unit tests, here merely that
//! radius-rs's request/response authenticator checks still pass on packets carrying one.

use std::net::Ipv4Addr;

use radacctd::radius::codec::{Attribute, Code, Packet, PacketBuilder};
use radacctd::radius::dictionary::*;
use radius::core::avp::AVP;
use radius::core::code::Code as RrCode;
use radius::core::packet::Packet as RrPacket;
use radius::core::vsa::StringVSA;
use radius::core::{rfc2865, rfc2866, rfc2869};

const SECRET: &[u8] = b"s3cr3t-shared";

/// The attributes a MikroTik sends in an Interim-Update, as (type, value), in order.
fn interim_update_attrs() -> Vec<(u8, Vec<u8>)> {
    let mut vsa = VENDOR_MIKROTIK.to_be_bytes().to_vec();
    vsa.extend_from_slice(&[8, 9]);
    vsa.extend_from_slice(b"10M/10M");
    vec![
        (USER_NAME, b"alice".to_vec()),
        (ACCT_SESSION_ID, b"81a00007".to_vec()),
        (NAS_IP_ADDRESS, vec![10, 0, 0, 1]),
        (NAS_IDENTIFIER, b"core-rtr".to_vec()),
        (NAS_PORT, 15728647u32.to_be_bytes().to_vec()),
        (NAS_PORT_ID, b"ether2".to_vec()),
        (NAS_PORT_TYPE, 15u32.to_be_bytes().to_vec()),
        (SERVICE_TYPE, 2u32.to_be_bytes().to_vec()),
        (FRAMED_PROTOCOL, 1u32.to_be_bytes().to_vec()),
        (FRAMED_IP_ADDRESS, vec![100, 64, 3, 7]),
        (CALLING_STATION_ID, b"AA:BB:CC:DD:EE:FF".to_vec()),
        (CALLED_STATION_ID, b"pppoe-svc".to_vec()),
        (
            ACCT_STATUS_TYPE,
            STATUS_INTERIM_UPDATE.to_be_bytes().to_vec(),
        ),
        (ACCT_SESSION_TIME, 3600u32.to_be_bytes().to_vec()),
        (ACCT_INPUT_OCTETS, 123_456_789u32.to_be_bytes().to_vec()),
        (ACCT_OUTPUT_OCTETS, 987_654_321u32.to_be_bytes().to_vec()),
        (ACCT_INPUT_GIGAWORDS, 1u32.to_be_bytes().to_vec()),
        (ACCT_OUTPUT_GIGAWORDS, 2u32.to_be_bytes().to_vec()),
        (EVENT_TIMESTAMP, 1_700_000_000u32.to_be_bytes().to_vec()),
        (ACCT_DELAY_TIME, 0u32.to_be_bytes().to_vec()),
        (ACCT_AUTHENTIC, 1u32.to_be_bytes().to_vec()),
        (VENDOR_SPECIFIC, vsa),
        (PROXY_STATE, vec![0, 1, 2, 3]),
        (PROXY_STATE, b"second".to_vec()),
    ]
}

fn our_request(code: Code, id: u8, attrs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut b = PacketBuilder::new(code, id);
    for (t, v) in attrs {
        b.attr(*t, v).unwrap();
    }
    b.encode_request(SECRET).unwrap()
}

fn rr_code(code: Code) -> RrCode {
    RrCode::from(code.as_u8())
}

/// Every value radius-rs decodes for `typ`, in order.
fn rr_values(p: &RrPacket, typ: u8) -> Vec<Vec<u8>> {
    p.lookup_all(typ).iter().map(|a| a.encode_bytes()).collect()
}

fn assert_rr_has_same_attributes(rr: &RrPacket, attrs: &[(u8, Vec<u8>)]) {
    for typ in 0..=255u8 {
        let ours: Vec<Vec<u8>> = attrs
            .iter()
            .filter(|(t, _)| *t == typ)
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(rr_values(rr, typ), ours, "attribute type {typ}");
    }
}

fn ours_as_list(p: &Packet<'_>) -> Vec<(u8, Vec<u8>)> {
    p.attributes().map(|a| (a.typ, a.value.to_vec())).collect()
}

#[test]
fn our_signed_requests_verify_in_radius_rs() {
    let attrs = interim_update_attrs();
    for code in [
        Code::AccountingRequest,
        Code::DisconnectRequest,
        Code::CoaRequest,
    ] {
        let bytes = our_request(code, 77, &attrs);
        assert!(RrPacket::is_authentic_request(&bytes, SECRET), "{code:?}");
        assert!(
            !RrPacket::is_authentic_request(&bytes, b"other"),
            "{code:?}"
        );
        let rr = RrPacket::decode(&bytes, SECRET).unwrap();
        assert_eq!(rr.get_code(), rr_code(code));
        assert_eq!(rr.get_identifier(), 77);
        assert_eq!(rr.get_authenticator().as_slice(), &bytes[4..20]);
        assert_rr_has_same_attributes(&rr, &attrs);
        assert_eq!(
            rfc2866::lookup_acct_status_type(&rr).unwrap().unwrap(),
            STATUS_INTERIM_UPDATE
        );
    }
}

#[test]
fn our_request_with_message_authenticator_still_verifies_in_radius_rs() {
    let mut b = PacketBuilder::new(Code::DisconnectRequest, 3);
    b.attr(USER_NAME, b"alice").unwrap();
    b.attr(ACCT_SESSION_ID, b"81a00007").unwrap();
    b.message_authenticator();
    let bytes = b.encode_request(SECRET).unwrap();
    assert!(RrPacket::is_authentic_request(&bytes, SECRET));
    let rr = RrPacket::decode(&bytes, SECRET).unwrap();
    let ma = rfc2869::lookup_message_authenticator(&rr).unwrap();
    assert_eq!(ma.len(), 16);
    assert_ne!(ma, vec![0; 16]);
    let p = Packet::decode(&bytes).unwrap();
    assert_eq!(p.verify_message_authenticator(SECRET, None), Some(true));
}

/// A radius-rs-built request carrying the Interim-Update attributes, built with its typed
/// helpers where it has them.
fn rr_interim_update(code: RrCode, id: u8) -> RrPacket {
    let mut p = RrPacket::new_with_identifier(code, SECRET, id);
    rfc2865::add_user_name(&mut p, "alice");
    rfc2866::add_acct_session_id(&mut p, "81a00007");
    rfc2865::add_nas_ip_address(&mut p, &Ipv4Addr::new(10, 0, 0, 1));
    rfc2865::add_nas_identifier(&mut p, "core-rtr");
    rfc2865::add_nas_port(&mut p, 15728647);
    p.add(AVP::from_string(NAS_PORT_ID, "ether2"));
    rfc2865::add_nas_port_type(&mut p, 15);
    rfc2865::add_service_type(&mut p, rfc2865::SERVICE_TYPE_FRAMED_USER);
    rfc2865::add_framed_protocol(&mut p, 1);
    rfc2865::add_framed_ip_address(&mut p, &Ipv4Addr::new(100, 64, 3, 7));
    rfc2865::add_calling_station_id(&mut p, "AA:BB:CC:DD:EE:FF");
    rfc2865::add_called_station_id(&mut p, "pppoe-svc");
    rfc2866::add_acct_status_type(&mut p, rfc2866::ACCT_STATUS_TYPE_INTERIM_UPDATE);
    rfc2866::add_acct_session_time(&mut p, 3600);
    rfc2866::add_acct_input_octets(&mut p, 123_456_789);
    rfc2866::add_acct_output_octets(&mut p, 987_654_321);
    rfc2869::add_acct_input_gigawords(&mut p, 1);
    rfc2869::add_acct_output_gigawords(&mut p, 2);
    p.add(AVP::from_u32(EVENT_TIMESTAMP, 1_700_000_000));
    rfc2866::add_acct_delay_time(&mut p, 0);
    rfc2866::add_acct_authentic(&mut p, 1);
    rfc2865::add_vsa_attribute(
        &mut p,
        &StringVSA::new(VENDOR_MIKROTIK as i32, 8, "10M/10M"),
    );
    rfc2865::add_proxy_state(&mut p, &[0, 1, 2, 3]);
    rfc2865::add_proxy_state(&mut p, b"second");
    p
}

#[test]
fn radius_rs_requests_decode_and_verify_in_ours() {
    for (rr, ours) in [
        (RrCode::AccountingRequest, Code::AccountingRequest),
        (RrCode::DisconnectRequest, Code::DisconnectRequest),
        (RrCode::CoARequest, Code::CoaRequest),
    ] {
        let bytes = rr_interim_update(rr, 201).encode().unwrap();
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.code(), ours);
        assert_eq!(p.identifier(), 201);
        assert_eq!(ours_as_list(&p), interim_update_attrs());
        assert!(p.verify_request_authenticator(SECRET), "{ours:?}");
        assert!(!p.verify_request_authenticator(b"other"));
        assert_eq!(p.verify_message_authenticator(SECRET, None), None);
        assert_eq!(p.attr_u32(ACCT_STATUS_TYPE), Some(STATUS_INTERIM_UPDATE));
        assert_eq!(
            p.attr_ipv4(FRAMED_IP_ADDRESS),
            Some(Ipv4Addr::new(100, 64, 3, 7))
        );
        assert_eq!(
            p.vendor_attributes(VENDOR_MIKROTIK).collect::<Vec<_>>(),
            vec![Attribute {
                typ: 8,
                value: b"10M/10M"
            }]
        );
        // Byte-identical to what our builder makes from the same list.
        assert_eq!(bytes, our_request(ours, 201, &interim_update_attrs()));
    }
}

#[test]
fn our_signed_responses_verify_in_radius_rs() {
    let request = rr_interim_update(RrCode::AccountingRequest, 9)
        .encode()
        .unwrap();
    let req = Packet::decode(&request).unwrap();
    for code in [Code::AccountingResponse, Code::DisconnectAck, Code::CoaNak] {
        let mut b = PacketBuilder::new(code, req.identifier());
        for a in req.attributes().filter(|a| a.typ == PROXY_STATE) {
            b.raw_attr(a).unwrap();
        }
        if code == Code::CoaNak {
            b.attr_u32(ERROR_CAUSE, 503).unwrap();
            b.message_authenticator();
        }
        let resp = b.encode_response(req.authenticator(), SECRET).unwrap();
        assert!(
            RrPacket::is_authentic_response(&resp, &request, SECRET),
            "{code:?}"
        );
        assert!(!RrPacket::is_authentic_response(&resp, &request, b"other"));
        let rr = RrPacket::decode(&resp, SECRET).unwrap();
        assert_eq!(rr.get_code(), rr_code(code));
        assert_eq!(rr.get_identifier(), 9);
        assert_eq!(
            rfc2865::lookup_all_proxy_state(&rr),
            vec![vec![0, 1, 2, 3], b"second".to_vec()]
        );
    }
}

#[test]
fn radius_rs_responses_verify_in_ours() {
    let attrs = interim_update_attrs();
    for (req_code, resp_code, ours) in [
        (
            Code::AccountingRequest,
            RrCode::AccountingResponse,
            Code::AccountingResponse,
        ),
        (
            Code::DisconnectRequest,
            RrCode::DisconnectACK,
            Code::DisconnectAck,
        ),
        (
            Code::DisconnectRequest,
            RrCode::DisconnectNAK,
            Code::DisconnectNak,
        ),
        (Code::CoaRequest, RrCode::CoAACK, Code::CoaAck),
    ] {
        let request = our_request(req_code, 150, &attrs);
        let rr_req = RrPacket::decode(&request, SECRET).unwrap();
        let mut rr_resp = rr_req.make_response_packet(resp_code);
        rfc2865::add_proxy_state(&mut rr_resp, b"ps");
        let resp = rr_resp.encode().unwrap();
        let req = Packet::decode(&request).unwrap();
        let p = Packet::decode(&resp).unwrap();
        assert_eq!(p.code(), ours);
        assert_eq!(p.identifier(), 150);
        assert_eq!(ours_as_list(&p), vec![(PROXY_STATE, b"ps".to_vec())]);
        assert!(
            p.verify_response_authenticator(req.authenticator(), SECRET),
            "{ours:?}"
        );
        assert!(!p.verify_response_authenticator(req.authenticator(), b"other"));
        assert!(!p.verify_response_authenticator(&[0; 16], SECRET));
    }
}
