//! Subscriptions: every subscription receives every message of its topic.

use courier_store_fjall::{DeliveryMode, StartPosition, SubscriptionSettings};

use crate::common::*;

#[tokio::test]
async fn every_subscription_receives_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut subs = Vec::new();
    for name in ["notification", "recommendation", "membership"] {
        subs.push(
            store
                .subscribe(name, "orders", settings(DeliveryMode::Ordered))
                .await
                .unwrap(),
        );
    }
    store
        .append(
            "orders",
            &messages(300, |i| Some(format!("user-{}", i % 17))),
        )
        .await
        .unwrap();
    for sub in &subs {
        let handled = drain(sub).await;
        let mut payloads: Vec<String> = handled.concat();
        payloads.sort();
        let mut expected: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
        expected.sort();
        assert_eq!(payloads, expected, "{}", sub.subscriber());
        assert_eq!(
            store
                .subscription_info(sub.subscriber(), "orders")
                .unwrap()
                .lag,
            0
        );
    }
}

#[tokio::test]
async fn a_late_subscription_starts_at_earliest_or_latest_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append("orders", &messages(40, |_| None))
        .await
        .unwrap();
    let earliest = store
        .subscribe("from-start", "orders", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    let latest_settings = SubscriptionSettings {
        start: StartPosition::Latest,
        ..settings(DeliveryMode::Ordered)
    };
    let latest = store
        .subscribe("from-now", "orders", latest_settings)
        .await
        .unwrap();
    store
        .append("orders", &messages(8, |_| None))
        .await
        .unwrap();
    assert_eq!(total(&drain(&earliest).await), 48);
    assert_eq!(total(&drain(&latest).await), 8);
}

#[tokio::test]
async fn cursors_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let sub = store
            .subscribe("s", "t", settings(DeliveryMode::Ordered))
            .await
            .unwrap();
        store
            .append("t", &messages(50, |i| Some(format!("{i}"))))
            .await
            .unwrap();
        assert_eq!(total(&drain(&sub).await), 50);
        store
            .append("t", &messages(5, |i| Some(format!("{i}"))))
            .await
            .unwrap();
        store.close().await;
    }
    let store = open(dir.path());
    let sub = store.subscription("s", "t").unwrap();
    assert_eq!(store.subscription_info("s", "t").unwrap().lag, 5);
    assert_eq!(total(&drain(&sub).await), 5);
}

#[tokio::test]
async fn resubscribing_keeps_cursors_and_updates_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store.append("t", &messages(10, |_| None)).await.unwrap();
    drain(&sub).await;
    let mut changed = settings(DeliveryMode::Unordered);
    changed.max_attempts = 9;
    let again = store.subscribe("s", "t", changed).await.unwrap();
    assert_eq!(again.settings().max_attempts, 9);
    assert_eq!(store.subscription_info("s", "t").unwrap().lag, 0);
    store.append("t", &messages(3, |_| None)).await.unwrap();
    assert_eq!(total(&drain(&again).await), 3);
}

#[tokio::test]
async fn unsubscribing_forgets_cursors_but_not_messages_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let gone = store
        .subscribe("gone", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    let stays = store
        .subscribe("stays", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store.append("t", &messages(10, |_| None)).await.unwrap();
    store.unsubscribe("gone", "t").await.unwrap();
    assert!(!gone.is_active());
    assert!(store.subscription("gone", "t").is_err());
    assert_eq!(total(&drain(&stays).await), 10);
    // Re-subscribing starts over, from the earliest retained message.
    let again = store
        .subscribe("gone", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    assert_eq!(total(&drain(&again).await), 10);
}
