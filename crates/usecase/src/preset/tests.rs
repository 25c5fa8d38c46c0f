//! The preset rules at the use-case level, over the in-memory store and a catalogue: private
//! to their owner, a model from the catalogue, `max_tokens` within that model's context.

use domain::{Timestamp, UserId};

use super::*;
use crate::catalog::CatalogService;
use crate::testing::{FakeLlm, InMemoryStore, ManualClock, SequentialIds, free_model};

type Catalog = CatalogService<InMemoryStore, FakeLlm, ManualClock>;
type Service = PresetService<InMemoryStore, Catalog, ManualClock, SequentialIds>;

const ALICE: UserId = UserId::from_u128(1);
const BOB: UserId = UserId::from_u128(2);

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_unix_seconds(1_800_000_000))
}

async fn service() -> Service {
    let store = InMemoryStore::new()
        .with_users(&[(ALICE, "alice"), (BOB, "bob")])
        .await;
    let llm = FakeLlm::with_models(vec![free_model("m/small", 4_096)]);
    let catalog = Arc::new(CatalogService::new(
        store.clone(),
        llm,
        clock(),
        std::time::Duration::from_secs(60),
    ));
    PresetService::new(store, catalog, clock(), SequentialIds::default())
}

fn input(model: Option<&str>, max_tokens: Option<i64>) -> PresetInput {
    PresetInput {
        name: PresetName::parse("Careful").unwrap(),
        description: None,
        model_id: model.map(|m| ModelId::parse(m).unwrap()),
        temperature: None,
        max_tokens,
        system_prompt: None,
        is_favorite: false,
    }
}

#[tokio::test]
async fn a_preset_names_a_catalogue_model_and_fits_its_context() {
    let s = service().await;
    assert!(matches!(
        s.create(ALICE, input(Some("m/unknown"), None)).await,
        Err(PresetError::UnknownModel(_))
    ));
    match s.create(ALICE, input(Some("m/small"), Some(4_097))).await {
        Err(PresetError::Invalid(e)) => assert_eq!(e.field, "max_tokens"),
        other => panic!("expected max_tokens to be refused, got {other:?}"),
    }
    let p = s
        .create(ALICE, input(Some("m/small"), Some(4_096)))
        .await
        .unwrap();
    assert_eq!(p.max_tokens.map(MaxTokens::value), Some(4_096));
    // An update is held to the same rules.
    assert!(matches!(
        s.update(ALICE, p.id, input(Some("m/small"), Some(0))).await,
        Err(PresetError::Invalid(_))
    ));
}

#[tokio::test]
async fn presets_are_private_to_their_owner() {
    let s = service().await;
    let p = s.create(ALICE, input(None, None)).await.unwrap();
    assert!(matches!(s.get(BOB, p.id).await, Err(PresetError::NotFound)));
    assert!(matches!(
        s.update(BOB, p.id, input(None, None)).await,
        Err(PresetError::NotFound)
    ));
    assert!(matches!(
        s.delete(BOB, p.id).await,
        Err(PresetError::NotFound)
    ));
    assert!(matches!(
        s.record_use(BOB, p.id).await,
        Err(PresetError::NotFound)
    ));
    assert_eq!(s.record_use(ALICE, p.id).await.unwrap(), 1);
    assert_eq!(s.get(ALICE, p.id).await.unwrap().usage_count, 1);
}
