//! The DNS SRV source against a small authoritative server on loopback
//! that answers SRV queries (with A records in the additional section)
//! from a table the test changes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use convoy_remote::source::dns::{DnsConfig, DnsSource};
use convoy_remote::{Change, ChangeStream, Endpoint, EndpointSource};
use futures::StreamExt;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

const SERVICE: &str = "_http._tcp.convoy-node.default.svc.cluster.local.";

/// (target host, address, port) per SRV record; `None`: answer SERVFAIL.
type Table = Arc<Mutex<Option<Vec<(String, Ipv4Addr, u16)>>>>;

async fn dns_server(table: Table) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_authoritative(true)
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .add_queries(query.queries().to_vec());
            let q = &query.queries()[0];
            let service = Name::from_ascii(SERVICE).unwrap();
            let rows = table.lock().clone();
            match rows {
                None => {
                    answer.set_response_code(ResponseCode::ServFail);
                }
                Some(rows) if q.query_type() == RecordType::SRV && *q.name() == service => {
                    if rows.is_empty() {
                        answer.set_response_code(ResponseCode::NXDomain);
                    }
                    for (host, ip, port) in rows {
                        let target = Name::from_ascii(format!("{host}.{SERVICE}")).unwrap();
                        answer.add_answer(Record::from_rdata(
                            service.clone(),
                            1,
                            RData::SRV(SRV::new(0, 10, port, target.clone())),
                        ));
                        answer.add_additional(Record::from_rdata(target, 1, RData::A(A(ip))));
                    }
                }
                // The targets' addresses, for a resolver that asks for
                // them apart from the SRV answer.
                Some(rows) if q.query_type() == RecordType::A => {
                    let host = rows.into_iter().find(|(host, _, _)| {
                        Name::from_ascii(format!("{host}.{SERVICE}")).unwrap() == *q.name()
                    });
                    match host {
                        Some((_, ip, _)) => {
                            answer.add_answer(Record::from_rdata(
                                q.name().clone(),
                                1,
                                RData::A(A(ip)),
                            ));
                        }
                        None => {
                            answer.set_response_code(ResponseCode::NXDomain);
                        }
                    }
                }
                Some(_) => {
                    answer.set_response_code(ResponseCode::NXDomain);
                }
            }
            let bytes = answer.to_vec().unwrap();
            let _ = socket.send_to(&bytes, peer).await;
        }
    });
    addr
}

fn endpoint(host: &str, ip: Ipv4Addr, port: u16) -> Endpoint {
    let id = format!("{host}.{}:{port}", SERVICE.trim_end_matches('.'));
    Endpoint::ready(id, SocketAddr::from((ip, port)), "2")
}

/// The next item (a change or a reported error) within 5 s.
async fn next(changes: &mut ChangeStream) -> Result<Change, String> {
    timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("no item within 5 s")
        .expect("the source ended")
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_become_endpoints_and_follow_the_answers() {
    let ip1 = Ipv4Addr::new(10, 1, 0, 1);
    let ip2 = Ipv4Addr::new(10, 1, 0, 2);
    let ip3 = Ipv4Addr::new(10, 1, 0, 3);
    let table: Table = Arc::new(Mutex::new(Some(vec![
        ("pod-1".into(), ip1, 8080),
        ("pod-2".into(), ip2, 8080),
    ])));
    let server = dns_server(table.clone()).await;
    let mut config = DnsConfig::new(SERVICE, "2");
    config.interval = Duration::from_millis(100);
    config.timeout = Duration::from_millis(500);
    config.name_servers = Some(vec![server]);
    let mut changes = DnsSource::new(config).unwrap().changes();

    assert_eq!(
        next(&mut changes).await,
        Ok(Change::Insert(endpoint("pod-1", ip1, 8080)))
    );
    assert_eq!(
        next(&mut changes).await,
        Ok(Change::Insert(endpoint("pod-2", ip2, 8080)))
    );

    // pod-1 goes (not ready: a headless Service stops listing it), pod-3 comes.
    *table.lock() = Some(vec![
        ("pod-2".into(), ip2, 8080),
        ("pod-3".into(), ip3, 8080),
    ]);
    assert_eq!(
        next(&mut changes).await,
        Ok(Change::Remove(endpoint("pod-1", ip1, 8080).id))
    );
    assert_eq!(
        next(&mut changes).await,
        Ok(Change::Insert(endpoint("pod-3", ip3, 8080)))
    );

    // The server fails: reported, nothing removed.
    *table.lock() = None;
    assert!(next(&mut changes).await.is_err());
    // It answers again with the same set: nothing announced twice...
    *table.lock() = Some(vec![
        ("pod-2".into(), ip2, 8080),
        ("pod-3".into(), ip3, 8080),
    ]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match timeout(Duration::from_millis(300), changes.next()).await {
            Ok(Some(Ok(c))) => panic!("unexpected change {c:?}"),
            Ok(Some(Err(_))) | Err(_) => {}
            Ok(None) => panic!("the source ended"),
        }
    }
    // ...and no ready pod at all (NXDOMAIN) is an empty set.
    *table.lock() = Some(vec![]);
    let mut removed = vec![];
    while removed.len() < 2 {
        match next(&mut changes).await {
            Ok(Change::Remove(id)) => removed.push(id),
            Ok(c) => panic!("unexpected change {c:?}"),
            Err(_) => {}
        }
    }
    removed.sort();
    assert_eq!(
        removed,
        vec![
            endpoint("pod-2", ip2, 8080).id,
            endpoint("pod-3", ip3, 8080).id
        ]
    );
}

#[test]
fn invalid_configuration_names_the_field() {
    let mut c = DnsConfig::new("", "1");
    assert_eq!(DnsSource::new(c.clone()).unwrap_err().field(), "name");
    c.name = SERVICE.into();
    c.name_servers = Some(vec![]);
    assert_eq!(
        DnsSource::new(c.clone()).unwrap_err().field(),
        "name_servers"
    );
    c.name_servers = None;
    c.interval = Duration::ZERO;
    assert_eq!(DnsSource::new(c).unwrap_err().field(), "interval");
}
