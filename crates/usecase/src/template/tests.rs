//! The template rules at the use-case level, over the in-memory store: visibility, ownership,
//! declared variables, rendering and the use count.

use domain::{Timestamp, UserId};

use super::*;
use crate::testing::{InMemoryStore, ManualClock, SequentialIds};

type Service = TemplateService<InMemoryStore, ManualClock, SequentialIds>;

async fn service() -> Service {
    let store = InMemoryStore::new()
        .with_users(&[(ALICE, "alice"), (BOB, "bob")])
        .await;
    TemplateService::new(
        store,
        ManualClock::new(Timestamp::from_unix_seconds(1_800_000_000)),
        SequentialIds::default(),
    )
}

fn input(content: &str, public: bool, variables: Option<Vec<&str>>) -> TemplateInput {
    TemplateInput {
        name: TemplateName::parse("Translate").unwrap(),
        description: None,
        content: TemplateContent::parse(content).unwrap(),
        category: None,
        variables: variables.map(|v| v.into_iter().map(str::to_owned).collect()),
        is_public: public,
        is_favorite: false,
    }
}

const ALICE: UserId = UserId::from_u128(1);
const BOB: UserId = UserId::from_u128(2);

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_private_template_is_invisible_to_others_and_a_public_one_unchangeable() {
    let s = service().await;
    let private = s
        .create(ALICE, input("Hi {{name}}", false, None))
        .await
        .unwrap();
    assert!(matches!(
        s.get(BOB, private.id).await,
        Err(TemplateError::NotFound)
    ));
    assert!(matches!(
        s.render(BOB, private.id, values(&[("name", "Bob")])).await,
        Err(TemplateError::NotFound)
    ));
    let public = s
        .create(ALICE, input("Hello {{name}}", true, None))
        .await
        .unwrap();
    assert_eq!(s.get(BOB, public.id).await.unwrap().id, public.id);
    assert!(matches!(
        s.update(BOB, public.id, input("Mine now", true, None))
            .await,
        Err(TemplateError::Forbidden)
    ));
    assert!(matches!(
        s.delete(BOB, public.id).await,
        Err(TemplateError::Forbidden)
    ));
    // Others may use and render it; the count is shared.
    assert_eq!(s.record_use(BOB, public.id).await.unwrap(), 1);
    assert_eq!(s.record_use(ALICE, public.id).await.unwrap(), 2);
    s.delete(ALICE, public.id).await.unwrap();
    assert!(matches!(
        s.get(ALICE, public.id).await,
        Err(TemplateError::NotFound)
    ));
}

#[tokio::test]
async fn declared_variables_must_match_the_content_and_rendering_names_what_is_wrong() {
    let s = service().await;
    let refused = s
        .create(
            ALICE,
            input(
                "Translate {{text}} into {{language}}",
                false,
                Some(vec!["text"]),
            ),
        )
        .await;
    assert!(
        matches!(refused, Err(TemplateError::Invalid(_))),
        "{refused:?}"
    );
    let t = s
        .create(
            ALICE,
            input(
                "Translate {{text}} into {{language}}",
                false,
                Some(vec!["language", "text"]),
            ),
        )
        .await
        .unwrap();
    let rendered = s
        .render(
            ALICE,
            t.id,
            values(&[("text", "hello"), ("language", "Japanese")]),
        )
        .await
        .unwrap();
    assert_eq!(rendered, "Translate hello into Japanese");
    match s
        .render(ALICE, t.id, values(&[("text", "hi"), ("tone", "warm")]))
        .await
    {
        Err(TemplateError::Render(RenderError::Variables { missing, unknown })) => {
            assert_eq!(missing, ["language"]);
            assert_eq!(unknown, ["tone"]);
        }
        other => panic!("expected a render error, got {other:?}"),
    }
}
