//! The order readers against real shards: by id (own shard or all), by client order
//! id, a user's orders by cursor (newest first, pages that neither skip nor repeat),
//! open ones only, and the errors for what cannot be routed.

mod common;

use std::str::FromStr;

use domain::{Month, OrderId, OrderStatus, OrderType, Price, Qty, Side, TimeInForce, UserId};

use router::RouterError;
use trading::placement::PlaceRequest;
use trading::readers::{order, order_by_client_id, orders_of_user, Page, ReadError};

fn buy(user: u64, price: &str, cid: &str) -> PlaceRequest {
    let mut r = common::limit(user, Side::Buy, price, "0.01");
    r.client_order_id = Some(cid.into());
    r
}

#[tokio::test]
async fn orders_are_read_by_id_by_client_id_and_by_cursor() {
    let common::Harness {
        env: owned,
        router,
        placer,
    } = common::Harness::new("readers", 11).await;
    let (env, placer, router) = (&owned, &placer, &router);
    common::deposit(env, 5, "USDT", "10000").await;
    common::deposit(env, 6, "USDT", "10000").await;
    let mut ids = Vec::new();
    for (i, price) in ["50000", "50001", "50002"].iter().enumerate() {
        let ack = placer
            .place(&buy(5, price, &format!("r-{i}")))
            .await
            .expect("place")
            .expect("accepted");
        ids.push(ack.order_id);
    }
    placer
        .place(&buy(6, "49000", "other"))
        .await
        .expect("place")
        .expect("accepted");
    let btc = router.symbol("BTCUSDT").expect("symbol");
    let u5 = UserId::new(5).expect("user");

    // by id, on the owner's shard: every stored field
    let found = order(&env.map, router, btc, ids[1], Some(u5))
        .await
        .expect("read");
    assert_eq!(found.len(), 1);
    let (shard, o) = &found[0];
    assert_eq!(*shard, env.map.shard_of(u5));
    assert_eq!(o.order_id, ids[1]);
    assert_eq!(o.client_order_id.as_deref(), Some("r-1"));
    assert_eq!(
        (o.user_id, o.side, o.order_type, o.tif),
        (u5, Side::Buy, OrderType::Limit, TimeInForce::Gtc)
    );
    assert_eq!(o.price, Some(Price::from_str("50001").expect("p")));
    assert_eq!(o.qty, Some(Qty::from_str("0.01").expect("q")));
    assert_eq!(o.frozen_amount, common::amt("500.01"));
    assert_eq!(
        (o.filled_qty, o.status),
        (common::amt("0"), OrderStatus::New)
    );
    assert!(o.created_ms > 0 && o.updated_ms >= o.created_ms);
    // another user's order is not yours; without a user every shard is searched
    let u6 = UserId::new(6).expect("user");
    assert!(order(&env.map, router, btc, ids[1], Some(u6))
        .await
        .expect("read")
        .is_empty());
    assert_eq!(
        order(&env.map, router, btc, ids[1], None)
            .await
            .expect("read")
            .len(),
        1
    );

    // by client order id
    let by_cid = order_by_client_id(&env.map, router, u5, "r-2")
        .await
        .expect("read");
    assert_eq!(by_cid.map(|o| o.order_id), Some(ids[2]));
    assert_eq!(
        order_by_client_id(&env.map, router, u5, "nope")
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        order_by_client_id(&env.map, router, u6, "r-2")
            .await
            .expect("read"),
        None
    );

    // by cursor: newest first, two then one, nothing repeated or skipped
    let since = Month::of(chrono::Utc::now());
    let now = chrono::Utc::now();
    let page = |before: Option<OrderId>, limit: u16| Page {
        before,
        limit,
        since,
    };
    let first = orders_of_user(&env.map, router, u5, btc, page(None, 2), false, now)
        .await
        .expect("page 1");
    assert_eq!(
        first.iter().map(|o| o.order_id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    let second = orders_of_user(&env.map, router, u5, btc, page(Some(ids[1]), 2), false, now)
        .await
        .expect("page 2");
    assert_eq!(
        second.iter().map(|o| o.order_id).collect::<Vec<_>>(),
        [ids[0]]
    );
    let open = orders_of_user(&env.map, router, u5, btc, page(None, 10), true, now)
        .await
        .expect("open");
    assert_eq!(open.len(), 3, "all three rest, none filled");

    // what cannot be routed is an error, never an empty answer
    let eth = router.symbol("ETHUSDT").expect("symbol");
    let old =
        OrderId::new(router::snowflake::min_id_at(1_700_000_000_000).expect("id") | 1).expect("id");
    match order(&env.map, router, eth, old, Some(u5)).await {
        Err(ReadError::Router(RouterError::MissingTable { .. })) => {}
        other => panic!("a month without tables must say so: {other:?}"),
    }
    testkit::audits_hold(env).await;
    owned.drop_all().await;
}

#[tokio::test]
async fn a_cancel_by_order_or_client_id_answers_the_order_and_writes_one_request() {
    let common::Harness {
        env: owned,
        router,
        placer,
    } = common::Harness::new("cancelby", 12).await;
    let env = &owned;
    common::deposit(env, 7, "USDT", "10000").await;
    let ack = placer
        .place(&buy(7, "50000", "c-1"))
        .await
        .expect("place")
        .expect("accepted");
    let (btc, eth) = (
        router.symbol("BTCUSDT").expect("symbol"),
        router.symbol("ETHUSDT").expect("symbol"),
    );
    let (u7, u8) = (UserId::new(7).expect("u"), UserId::new(8).expect("u"));
    let outbox = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
            .fetch_one(env.map.pool_for(u7))
            .await
            .expect("count");
        n
    };
    let before = outbox().await;
    use trading::placement::{CancelTarget, Reject};
    // refused: someone else's, another symbol's, an unknown client id, a non-snowflake id
    for (user, symbol, target) in [
        (u8, btc, CancelTarget::Client("c-1".into())),
        (u7, eth, CancelTarget::Client("c-1".into())),
        (u7, btc, CancelTarget::Client("c-2".into())),
        (
            u7,
            btc,
            CancelTarget::Order(OrderId::new(u64::MAX).expect("id")),
        ),
    ] {
        let r = placer
            .cancel(user, symbol, target.clone())
            .await
            .expect("cancel");
        assert_eq!(r, Err(Reject::UnknownOrder), "{user} {symbol} {target:?}");
    }
    assert_eq!(outbox().await, before, "a refused cancel writes nothing");
    // by client order id: the order as it stood, still open
    let o = placer
        .cancel(u7, btc, CancelTarget::Client("c-1".into()))
        .await
        .expect("cancel")
        .expect("accepted");
    assert_eq!((o.order_id, o.status), (ack.order_id, OrderStatus::New));
    assert_eq!(o.client_order_id.as_deref(), Some("c-1"));
    // by order id
    let o = placer
        .cancel(u7, btc, ack.order_id)
        .await
        .expect("cancel")
        .expect("accepted");
    assert_eq!(o.order_id, ack.order_id);
    assert_eq!(
        outbox().await,
        before + 2,
        "one request per accepted cancel"
    );
    testkit::audits_hold(env).await;
    owned.drop_all().await;
}

#[tokio::test]
async fn a_users_trades_are_read_by_trade_id_cursor_with_every_field() {
    let common::Harness {
        env: owned,
        router,
        placer: _,
    } = common::Harness::new("tradesof", 13).await;
    let env = &owned;
    let now = chrono::Utc::now();
    let btc = router.symbol("BTCUSDT").expect("symbol");
    let table = router
        .table(router::TableKind::Trades, &btc, Month::of(now))
        .expect("table");
    let (u5, u9) = (UserId::new(5).expect("u"), UserId::new(9).expect("u"));
    // fixtures as a settler writes them: user 5's halves of trades 1..=3, and user 9's
    // half of trade 2 (users 5 and 9 live on the same shard)
    for (trade, side, user, counter, maker) in [
        (1u64, "buy", 5u64, 9u64, false),
        (2, "sell", 5, 9, true),
        (2, "buy", 9, 5, false),
        (3, "buy", 5, 9, true),
    ] {
        sqlx::query(&format!(
            "INSERT INTO `{table}` (trade_id, side, symbol, order_id, user_id, counter_order_id, \
               counter_user_id, price, quantity, amount, is_maker, fee, fee_currency, seq) \
             VALUES (?, ?, 'BTCUSDT', ?, ?, ?, ?, '50000.5', '0.002', '100.001', ?, '0.000002', 'BTC', ?)"
        ))
        .bind(trade)
        .bind(side)
        .bind(trade * 100 + user)
        .bind(user)
        .bind(trade * 100 + counter)
        .bind(counter)
        .bind(maker)
        .bind(trade)
        .execute(env.map.pool_for(u5))
        .await
        .expect("fixture");
    }
    use trading::readers::{trades_of_user, TradePage};
    let page = |after: Option<u64>, limit: u16| TradePage {
        after,
        limit,
        since: Month::of(now),
    };
    let first = trades_of_user(&env.map, &router, u5, btc, page(None, 2), now)
        .await
        .expect("page 1");
    assert_eq!(first.iter().map(|t| t.trade_id).collect::<Vec<_>>(), [1, 2]);
    let t = &first[1];
    assert_eq!((t.side, t.is_maker), (Side::Sell, true));
    assert_eq!(t.order_id, OrderId::new(205).expect("id"));
    assert_eq!(t.counter_order_id, OrderId::new(209).expect("id"));
    assert_eq!(t.price, Price::from_str("50000.5").expect("p"));
    assert_eq!(t.qty, Qty::from_str("0.002").expect("q"));
    assert_eq!(
        (t.amount, t.fee),
        (common::amt("100.001"), common::amt("0.000002"))
    );
    assert_eq!(t.fee_asset, "BTC");
    let second = trades_of_user(&env.map, &router, u5, btc, page(Some(2), 2), now)
        .await
        .expect("page 2");
    assert_eq!(second.iter().map(|t| t.trade_id).collect::<Vec<_>>(), [3]);
    let theirs = trades_of_user(&env.map, &router, u9, btc, page(None, 10), now)
        .await
        .expect("user 9");
    assert_eq!(
        theirs
            .iter()
            .map(|t| (t.trade_id, t.side))
            .collect::<Vec<_>>(),
        [(2, Side::Buy)]
    );
    owned.drop_all().await;
}
