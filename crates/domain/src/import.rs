//! Conversations brought from other systems (the original service, ChatGPT exports): their
//! trees rebuilt as Arbor trees, saying what had to be repaired.
//!
//! Arbor's rules for a tree: one root, the only `system` message; every other message has a
//! parent in the same chat; the current leaf is one of its messages. A foreign tree may break
//! them (a node whose message was deleted, a system message in the middle, a node its root
//! does not reach); each break is repaired the same way whatever the source, and reported.

use std::collections::{HashMap, HashSet};

use crate::{ChatId, Message, MessageId, MessageStatus, Role, Timestamp};

/// The most one imported message keeps: as much as an answer Arbor generates itself.
pub const IMPORTED_MESSAGE_MAX_BYTES: usize = 1 << 20;

/// The root of a foreign tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRoot {
    /// Its id in Arbor.
    pub id: MessageId,
    /// Its text (often empty).
    pub content: String,
    /// When the conversation began.
    pub created_at: Timestamp,
}

/// One node below the root of a foreign tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignNode {
    /// Its id in Arbor.
    pub id: MessageId,
    /// Its parent's id (`None`: a node that hangs from nothing).
    pub parent: Option<MessageId>,
    /// What it says; `None` for a node whose message is gone or says nothing worth keeping.
    pub message: Option<ForeignMessage>,
}

/// A foreign message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// When it was written.
    pub created_at: Timestamp,
}

/// A change the rebuild made to a foreign tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// A node without its message: left out, its children attached to its parent.
    MissingMessage(MessageId),
    /// A `system` message with text below the root (Arbor keeps one, the root): left out,
    /// its children attached to its parent; the first becomes the chat's system prompt. (A
    /// blank one is left out the same way, unreported.)
    InnerSystemMessage(MessageId),
    /// A node the root does not reach (an unknown parent, a cycle): left out, and so is
    /// everything below it.
    Unreachable(MessageId),
    /// A second node with an id already used: left out.
    DuplicateId(MessageId),
    /// A message longer than [`IMPORTED_MESSAGE_MAX_BYTES`]: cut there.
    Truncated(MessageId),
}

/// A foreign tree as Arbor stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuiltTree {
    /// Every message kept, each after its parent, the root first; siblings oldest first.
    pub messages: Vec<Message>,
    /// The current leaf: the wanted one, or its nearest kept ancestor, or else the newest
    /// message.
    pub leaf: MessageId,
    /// The text of the first inner system message, for the chat's system prompt.
    pub system_prompt: Option<String>,
    /// What was changed, in the order found.
    pub repairs: Vec<Repair>,
}

/// Rebuilds a foreign tree for chat `chat`: `root`, the `nodes` below it, and the leaf the
/// source considered current (`wanted_leaf`).
#[must_use]
pub fn rebuild_tree(
    chat: ChatId,
    root: ForeignRoot,
    nodes: Vec<ForeignNode>,
    wanted_leaf: Option<MessageId>,
) -> RebuiltTree {
    let mut repairs = Vec::new();
    let mut by_id: HashMap<MessageId, ForeignNode> = HashMap::with_capacity(nodes.len());
    let mut order = Vec::with_capacity(nodes.len());
    for node in nodes {
        if node.id == root.id || by_id.contains_key(&node.id) {
            repairs.push(Repair::DuplicateId(node.id));
        } else {
            order.push(node.id);
            by_id.insert(node.id, node);
        }
    }
    let mut children: HashMap<MessageId, Vec<MessageId>> = HashMap::new();
    for id in &order {
        if let Some(parent) = by_id.get(id).and_then(|n| n.parent) {
            children.entry(parent).or_default().push(*id);
        }
    }
    let time_of = |id: &MessageId| {
        by_id
            .get(id)
            .and_then(|n| n.message.as_ref())
            .map(|m| m.created_at)
    };
    for list in children.values_mut() {
        list.sort_by_key(|id| (time_of(id), *id));
    }

    let mut root_content = root.content;
    if cut_to_limit(&mut root_content) {
        repairs.push(Repair::Truncated(root.id));
    }
    let mut messages = vec![Message {
        id: root.id,
        chat_id: chat,
        parent_id: None,
        role: Role::System,
        content: root_content,
        status: MessageStatus::Complete,
        created_at: root.created_at,
        generation: None,
    }];
    let mut system_prompt = None;
    // Where each visited node's children hang in Arbor: itself when kept, else its nearest
    // kept ancestor.
    let mut attach: HashMap<MessageId, MessageId> = HashMap::from([(root.id, root.id)]);
    let mut visited: HashSet<MessageId> = HashSet::from([root.id]);
    // Depth first, children pushed in reverse so the oldest comes out first.
    let mut stack: Vec<MessageId> = children
        .get(&root.id)
        .map_or_else(Vec::new, |c| c.iter().rev().copied().collect());
    while let Some(id) = stack.pop() {
        if !visited.insert(id) {
            continue;
        }
        let Some(node) = by_id.remove(&id) else {
            continue;
        };
        let parent = node
            .parent
            .and_then(|p| attach.get(&p).copied())
            .unwrap_or(root.id);
        let kept = match node.message {
            None => {
                repairs.push(Repair::MissingMessage(id));
                parent
            }
            // A blank one carries nothing: left out without a word.
            Some(m) if m.role == Role::System => {
                if !m.content.trim().is_empty() {
                    repairs.push(Repair::InnerSystemMessage(id));
                    system_prompt.get_or_insert(m.content);
                }
                parent
            }
            Some(m) => {
                let mut content = m.content;
                if cut_to_limit(&mut content) {
                    repairs.push(Repair::Truncated(id));
                }
                messages.push(Message {
                    id,
                    chat_id: chat,
                    parent_id: Some(parent),
                    role: m.role,
                    content,
                    status: MessageStatus::Complete,
                    created_at: m.created_at,
                    generation: None,
                });
                id
            }
        };
        attach.insert(id, kept);
        if let Some(below) = children.get(&id) {
            stack.extend(below.iter().rev().copied());
        }
    }
    repairs.extend(
        order
            .iter()
            .filter(|id| !visited.contains(id))
            .map(|id| Repair::Unreachable(*id)),
    );

    let leaf = wanted_leaf
        .and_then(|wanted| attach.get(&wanted).copied())
        .filter(|leaf| *leaf != root.id || messages.len() == 1)
        .or_else(|| {
            messages
                .iter()
                .enumerate()
                .max_by_key(|(i, m)| (m.created_at, *i))
                .map(|(_, m)| m.id)
        })
        .unwrap_or(root.id);
    RebuiltTree {
        messages,
        leaf,
        system_prompt,
        repairs,
    }
}

/// Cuts `text` to [`IMPORTED_MESSAGE_MAX_BYTES`] on a character boundary; whether it was cut.
fn cut_to_limit(text: &mut String) -> bool {
    if text.len() <= IMPORTED_MESSAGE_MAX_BYTES {
        return false;
    }
    let mut cut = IMPORTED_MESSAGE_MAX_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> MessageId {
        MessageId::from_u128(n)
    }

    fn at(n: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_700_000_000 + n)
    }

    fn node(n: u128, parent: Option<u128>, role: Option<Role>, t: i64) -> ForeignNode {
        ForeignNode {
            id: id(n),
            parent: parent.map(id),
            message: role.map(|role| ForeignMessage {
                role,
                content: format!("message {n}"),
                created_at: at(t),
            }),
        }
    }

    fn root() -> ForeignRoot {
        ForeignRoot {
            id: id(1),
            content: String::new(),
            created_at: at(0),
        }
    }

    fn shape(tree: &RebuiltTree) -> Vec<(u128, Option<u128>)> {
        tree.messages
            .iter()
            .map(|m| (m.id.as_u128(), m.parent_id.map(MessageId::as_u128)))
            .collect()
    }

    #[test]
    fn a_branched_tree_keeps_every_branch_parents_first_and_the_wanted_leaf() {
        let nodes = vec![
            node(5, Some(4), Some(Role::Assistant), 5),
            node(2, Some(1), Some(Role::User), 1),
            node(3, Some(2), Some(Role::Assistant), 2),
            node(4, Some(2), Some(Role::Assistant), 3),
        ];
        let tree = rebuild_tree(ChatId::from_u128(9), root(), nodes, Some(id(3)));
        assert_eq!(
            shape(&tree),
            vec![
                (1, None),
                (2, Some(1)),
                (3, Some(2)),
                (4, Some(2)),
                (5, Some(4))
            ]
        );
        assert_eq!(tree.leaf, id(3));
        assert!(tree.repairs.is_empty());
        assert_eq!(tree.messages[0].role, Role::System);
    }

    #[test]
    fn a_node_without_its_message_is_left_out_and_its_children_move_up() {
        let nodes = vec![
            node(2, Some(1), Some(Role::User), 1),
            node(3, Some(2), None, 2),
            node(4, Some(3), Some(Role::User), 3),
            node(5, Some(4), Some(Role::Assistant), 4),
        ];
        let tree = rebuild_tree(ChatId::from_u128(9), root(), nodes, Some(id(3)));
        assert_eq!(
            shape(&tree),
            vec![(1, None), (2, Some(1)), (4, Some(2)), (5, Some(4))]
        );
        assert_eq!(tree.repairs, vec![Repair::MissingMessage(id(3))]);
        assert_eq!(tree.leaf, id(2), "the wanted leaf's nearest kept ancestor");
    }

    #[test]
    fn inner_system_messages_give_the_system_prompt_and_their_place_to_their_children() {
        let mut system = node(2, Some(1), Some(Role::System), 1);
        if let Some(m) = system.message.as_mut() {
            m.content = "Answer tersely".into();
        }
        let mut blank = node(4, Some(3), Some(Role::System), 3);
        if let Some(m) = blank.message.as_mut() {
            m.content = " ".into();
        }
        let nodes = vec![
            system,
            node(3, Some(2), Some(Role::User), 2),
            blank,
            node(5, Some(4), Some(Role::Assistant), 4),
        ];
        let tree = rebuild_tree(ChatId::from_u128(9), root(), nodes, None);
        assert_eq!(shape(&tree), vec![(1, None), (3, Some(1)), (5, Some(3))]);
        assert_eq!(tree.system_prompt.as_deref(), Some("Answer tersely"));
        assert_eq!(tree.repairs, vec![Repair::InnerSystemMessage(id(2))]);
        assert_eq!(tree.leaf, id(5), "the newest message without a wanted leaf");
    }

    #[test]
    fn unreachable_nodes_cycles_and_duplicate_ids_are_left_out_and_reported() {
        let nodes = vec![
            node(2, Some(1), Some(Role::User), 1),
            node(2, Some(1), Some(Role::User), 9),
            node(7, Some(8), Some(Role::User), 2),
            node(8, Some(7), Some(Role::Assistant), 3),
            node(6, None, Some(Role::User), 4),
            node(1, None, Some(Role::User), 5),
        ];
        let tree = rebuild_tree(ChatId::from_u128(9), root(), nodes, Some(id(8)));
        assert_eq!(shape(&tree), vec![(1, None), (2, Some(1))]);
        assert_eq!(
            tree.repairs,
            vec![
                Repair::DuplicateId(id(2)),
                Repair::DuplicateId(id(1)),
                Repair::Unreachable(id(7)),
                Repair::Unreachable(id(8)),
                Repair::Unreachable(id(6)),
            ]
        );
        assert_eq!(
            tree.leaf,
            id(2),
            "an unreachable wanted leaf falls back to the newest"
        );
    }

    #[test]
    fn an_overlong_message_is_cut_on_a_character_boundary() {
        let mut long = node(2, Some(1), Some(Role::User), 1);
        if let Some(m) = long.message.as_mut() {
            m.content = "é".repeat(IMPORTED_MESSAGE_MAX_BYTES);
        }
        let mut long_root = root();
        long_root.content = "x".repeat(IMPORTED_MESSAGE_MAX_BYTES + 1);
        let tree = rebuild_tree(ChatId::from_u128(9), long_root, vec![long], None);
        assert_eq!(tree.messages[0].content.len(), IMPORTED_MESSAGE_MAX_BYTES);
        assert_eq!(tree.messages[1].content.len(), IMPORTED_MESSAGE_MAX_BYTES);
        assert_eq!(
            tree.repairs,
            vec![Repair::Truncated(id(1)), Repair::Truncated(id(2))]
        );
    }
}
