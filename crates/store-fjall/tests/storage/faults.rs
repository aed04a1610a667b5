//! Bad input and faults: clear errors, nothing acknowledged lost.

use courier_store_fjall::{DeliveryMode, Error, FjallStore, NewMessage, StoreConfig};

use crate::common::*;

#[tokio::test]
async fn oversized_messages_are_refused_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| c.max_message_bytes = 1000);
    let big = NewMessage {
        payload: vec![0; 2000],
        ..NewMessage::default()
    };
    let error = store
        .append("t", &[message(None, "ok"), big])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::MessageTooLarge { limit: 1000, .. }),
        "{error}"
    );
    // All or nothing: the good message of the batch was not stored either.
    assert_eq!(store.topic_info("t").map(|t| t.messages).unwrap_or(0), 0);
}

#[tokio::test]
async fn invalid_names_are_refused_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for bad in ["", "a/b", ".x", "white space", &"x".repeat(200)] {
        let error = store.append(bad, &[message(None, "x")]).await.unwrap_err();
        assert!(
            matches!(error, Error::InvalidName { kind: "topic", .. }),
            "{bad:?}: {error}"
        );
        assert!(error.to_string().contains("A-Z a-z 0-9"), "{error}");
    }
    let error = store
        .subscribe("bad name", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidName {
                kind: "subscriber",
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let Err(error) = FjallStore::open(StoreConfig::new(dir.path())) else {
        panic!("a second store on a locked directory must fail");
    };
    assert!(matches!(error, Error::Locked(_)), "{error}");
    assert!(error.to_string().contains("locked by another process"));
}

#[tokio::test]
async fn a_full_store_refuses_appends_but_still_takes_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .subscribe("s", "t", settings(DeliveryMode::Ordered))
            .await
            .unwrap();
        store
            .append("t", &[message(Some("k"), "before")])
            .await
            .unwrap();
        store.close().await;
    }
    // A database is never 1 byte: this store is "full" from its first check.
    let store = open_with(dir.path(), |c| c.max_disk_bytes = Some(1));
    store.run_maintenance().await.unwrap();
    let error = store.append("t", &[message(None, "x")]).await.unwrap_err();
    assert!(matches!(error, Error::StorageFull(_)), "{error}");
    assert!(error.to_string().contains("over the limit"), "{error}");
    assert!(store.health().full.is_some());
    let sub = store.subscription("s", "t").unwrap();
    assert_eq!(total(&drain(&sub).await), 1);
}

#[tokio::test]
async fn an_empty_append_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.append("t", &[]).await.unwrap().is_empty());
    assert!(store.topic_info("t").is_err());
}

#[tokio::test]
async fn a_closed_store_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", &[message(None, "x")]).await.unwrap();
    store.close().await;
    let error = store.append("t", &[message(None, "y")]).await.unwrap_err();
    assert!(matches!(error, Error::Closed), "{error}");
}
