//! The conversation tree of one chat, rebuilt from its messages (an adjacency list).
//!
//! Invariants, checked by [`ConversationTree::build`] and kept by every change:
//! exactly one root, of role `system`; every other message has a parent in the same chat;
//! no cycles; no message of another chat. All walks are iterative, so a 10,000-message
//! chain costs no stack.

use std::collections::HashMap;
use std::fmt;

use crate::id::{ChatId, MessageId};
use crate::message::{Message, Role};

/// Why messages do not form a valid tree, or why a change would break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeError {
    /// A chat always has its root message.
    Empty,
    /// No message without a parent.
    NoRoot,
    /// More than one message without a parent.
    SecondRoot { first: MessageId, second: MessageId },
    /// The root must be the `system` message, and only the root may be.
    MisplacedSystemMessage(MessageId),
    /// A message belongs to another chat.
    ForeignMessage(MessageId),
    /// A message's parent is not in this chat.
    ParentNotInChat {
        message: MessageId,
        parent: MessageId,
    },
    /// The same id twice.
    DuplicateId(MessageId),
    /// Messages that cannot be reached from the root: their parent links form a cycle.
    Cycle(MessageId),
    /// No message with this id in the chat.
    UnknownMessage(MessageId),
    /// The root cannot be removed (delete the chat instead).
    RootRemoval,
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("a conversation has at least its root message"),
            Self::NoRoot => f.write_str("no root message"),
            Self::SecondRoot { first, second } => {
                write!(f, "two root messages: {first} and {second}")
            }
            Self::MisplacedSystemMessage(id) => {
                write!(
                    f,
                    "message {id}: only the root is a system message, and it must be one"
                )
            }
            Self::ForeignMessage(id) => write!(f, "message {id} belongs to another chat"),
            Self::ParentNotInChat { message, parent } => {
                write!(
                    f,
                    "message {message} has parent {parent}, which is not in this chat"
                )
            }
            Self::DuplicateId(id) => write!(f, "message {id} appears twice"),
            Self::Cycle(id) => write!(f, "message {id} is part of a parent cycle"),
            Self::UnknownMessage(id) => write!(f, "message {id} is not in this chat"),
            Self::RootRemoval => f.write_str("the root message cannot be deleted"),
        }
    }
}

impl std::error::Error for TreeError {}

#[derive(Debug, Clone)]
struct Node {
    message: Message,
    children: Vec<MessageId>,
}

/// A validated conversation tree.
///
/// ```
/// use domain::{ChatId, ConversationTree, Message, MessageId, MessageStatus, Role, Timestamp};
///
/// let chat = ChatId::from_u128(1);
/// let msg = |id: u128, parent: Option<u128>, role| Message {
///     id: MessageId::from_u128(id),
///     chat_id: chat,
///     parent_id: parent.map(MessageId::from_u128),
///     role,
///     content: format!("m{id}"),
///     status: MessageStatus::Complete,
///     created_at: Timestamp::from_unix_micros(id as i64),
///     generation: None,
/// };
/// let tree = ConversationTree::build(
///     chat,
///     vec![
///         msg(1, None, Role::System),
///         msg(2, Some(1), Role::User),
///         msg(3, Some(2), Role::Assistant),
///         msg(4, Some(2), Role::Assistant), // a regenerated answer: a sibling of 3
///     ],
/// )?;
/// let path: Vec<_> = tree.path_to(MessageId::from_u128(4))?.iter().map(|m| m.content.as_str()).collect();
/// assert_eq!(path, ["m1", "m2", "m4"]);
/// assert_eq!(tree.siblings(MessageId::from_u128(3))?.len(), 1);
/// # Ok::<(), domain::TreeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConversationTree {
    chat_id: ChatId,
    root: MessageId,
    nodes: HashMap<MessageId, Node>,
}

impl ConversationTree {
    /// Builds and validates the tree of `chat_id` from its messages, in any order.
    /// Children are ordered by creation time, then id.
    ///
    /// # Errors
    /// A [`TreeError`] naming the first broken invariant.
    pub fn build(chat_id: ChatId, messages: Vec<Message>) -> Result<Self, TreeError> {
        let mut nodes: HashMap<MessageId, Node> = HashMap::with_capacity(messages.len());
        let mut root: Option<MessageId> = None;
        for message in messages {
            if message.chat_id != chat_id {
                return Err(TreeError::ForeignMessage(message.id));
            }
            let is_root = message.parent_id.is_none();
            if is_root != (message.role == Role::System) {
                return Err(TreeError::MisplacedSystemMessage(message.id));
            }
            if is_root {
                if let Some(first) = root {
                    return Err(TreeError::SecondRoot {
                        first,
                        second: message.id,
                    });
                }
                root = Some(message.id);
            }
            let id = message.id;
            let node = Node {
                message,
                children: Vec::new(),
            };
            if nodes.insert(id, node).is_some() {
                return Err(TreeError::DuplicateId(id));
            }
        }
        if nodes.is_empty() {
            return Err(TreeError::Empty);
        }
        let root = root.ok_or(TreeError::NoRoot)?;

        let mut links: Vec<(MessageId, MessageId)> = Vec::with_capacity(nodes.len());
        for node in nodes.values() {
            if let Some(parent) = node.message.parent_id {
                if !nodes.contains_key(&parent) {
                    return Err(TreeError::ParentNotInChat {
                        message: node.message.id,
                        parent,
                    });
                }
                links.push((parent, node.message.id));
            }
        }
        for (parent, child) in links {
            if let Some(p) = nodes.get_mut(&parent) {
                p.children.push(child);
            }
        }
        let order: HashMap<MessageId, (crate::time::Timestamp, MessageId)> = nodes
            .iter()
            .map(|(id, n)| (*id, (n.message.created_at, *id)))
            .collect();
        for node in nodes.values_mut() {
            node.children.sort_by_key(|c| order.get(c).copied());
        }

        let tree = Self {
            chat_id,
            root,
            nodes,
        };
        // Every node has a parent in the set, so a node the root cannot reach sits on a cycle.
        let reached = tree.subtree_ids(root).len();
        if reached != tree.nodes.len() {
            let reachable: std::collections::HashSet<MessageId> =
                tree.subtree_ids(root).into_iter().collect();
            let stray = tree
                .nodes
                .keys()
                .find(|id| !reachable.contains(id))
                .copied()
                .unwrap_or(root);
            return Err(TreeError::Cycle(stray));
        }
        Ok(tree)
    }

    /// The chat this tree belongs to.
    #[must_use]
    pub const fn chat_id(&self) -> ChatId {
        self.chat_id
    }

    /// The root (system) message.
    #[must_use]
    pub fn root(&self) -> &Message {
        &self.nodes[&self.root].message
    }

    /// Number of messages.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a tree has at least its root.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The message `id`, if it is in this chat.
    #[must_use]
    pub fn get(&self, id: MessageId) -> Option<&Message> {
        self.nodes.get(&id).map(|n| &n.message)
    }

    /// Whether `id` is in this chat.
    #[must_use]
    pub fn contains(&self, id: MessageId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// All messages, in no particular order.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.nodes.values().map(|n| &n.message)
    }

    fn node(&self, id: MessageId) -> Result<&Node, TreeError> {
        self.nodes.get(&id).ok_or(TreeError::UnknownMessage(id))
    }

    /// The children of `id`, oldest first.
    ///
    /// # Errors
    /// [`TreeError::UnknownMessage`].
    pub fn children(&self, id: MessageId) -> Result<Vec<&Message>, TreeError> {
        Ok(self
            .node(id)?
            .children
            .iter()
            .filter_map(|c| self.get(*c))
            .collect())
    }

    /// The other children of `id`'s parent (empty for the root), oldest first.
    ///
    /// # Errors
    /// [`TreeError::UnknownMessage`].
    pub fn siblings(&self, id: MessageId) -> Result<Vec<&Message>, TreeError> {
        let Some(parent) = self.node(id)?.message.parent_id else {
            return Ok(Vec::new());
        };
        Ok(self
            .children(parent)?
            .into_iter()
            .filter(|m| m.id != id)
            .collect())
    }

    /// The messages from the root down to `id`, both included.
    ///
    /// # Errors
    /// [`TreeError::UnknownMessage`].
    pub fn path_to(&self, id: MessageId) -> Result<Vec<&Message>, TreeError> {
        let mut path = Vec::new();
        let mut cursor = Some(id);
        while let Some(current) = cursor {
            let node = self.node(current)?;
            path.push(&node.message);
            cursor = node.message.parent_id;
            if path.len() > self.nodes.len() {
                return Err(TreeError::Cycle(id));
            }
        }
        path.reverse();
        Ok(path)
    }

    /// `id` and all its descendants, parents before children.
    #[must_use]
    pub fn subtree_ids(&self, id: MessageId) -> Vec<MessageId> {
        let mut out = Vec::new();
        let mut stack = vec![id];
        while let Some(current) = stack.pop() {
            if let Some(node) = self.nodes.get(&current) {
                out.push(current);
                stack.extend(node.children.iter().rev().copied());
            }
            if out.len() > self.nodes.len() {
                break;
            }
        }
        out
    }

    /// The newest leaf under `id` following the newest child at each step
    /// (where a client lands after selecting a message in the middle of a branch).
    ///
    /// # Errors
    /// [`TreeError::UnknownMessage`].
    pub fn latest_leaf_under(&self, id: MessageId) -> Result<MessageId, TreeError> {
        let mut current = self.node(id)?;
        while let Some(last) = current.children.last() {
            current = self.node(*last)?;
        }
        Ok(current.message.id)
    }

    /// Checks that `message` can be added: same chat, new id, parent in this tree, not a
    /// second system message.
    ///
    /// # Errors
    /// The [`TreeError`] the insertion would cause.
    pub fn check_insert(&self, message: &Message) -> Result<(), TreeError> {
        if message.chat_id != self.chat_id {
            return Err(TreeError::ForeignMessage(message.id));
        }
        if self.nodes.contains_key(&message.id) {
            return Err(TreeError::DuplicateId(message.id));
        }
        let Some(parent) = message.parent_id else {
            return Err(TreeError::SecondRoot {
                first: self.root,
                second: message.id,
            });
        };
        if message.role == Role::System {
            return Err(TreeError::MisplacedSystemMessage(message.id));
        }
        if !self.nodes.contains_key(&parent) {
            return Err(TreeError::ParentNotInChat {
                message: message.id,
                parent,
            });
        }
        Ok(())
    }

    /// Adds `message` as the newest child of its parent.
    ///
    /// # Errors
    /// As [`Self::check_insert`]; the tree is unchanged on error.
    pub fn insert(&mut self, message: Message) -> Result<(), TreeError> {
        self.check_insert(&message)?;
        let id = message.id;
        if let Some(parent) = message.parent_id.and_then(|p| self.nodes.get_mut(&p)) {
            parent.children.push(id);
        }
        self.nodes.insert(
            id,
            Node {
                message,
                children: Vec::new(),
            },
        );
        Ok(())
    }

    /// Removes `id` and its descendants; returns the removed ids (parents first) and the
    /// parent of `id`, the nearest surviving ancestor.
    ///
    /// # Errors
    /// [`TreeError::RootRemoval`] for the root, [`TreeError::UnknownMessage`]; the tree is
    /// unchanged on error.
    pub fn remove_subtree(
        &mut self,
        id: MessageId,
    ) -> Result<(Vec<MessageId>, MessageId), TreeError> {
        let parent = self
            .node(id)?
            .message
            .parent_id
            .ok_or(TreeError::RootRemoval)?;
        let removed = self.subtree_ids(id);
        for r in &removed {
            self.nodes.remove(r);
        }
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.retain(|c| *c != id);
        }
        Ok((removed, parent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageStatus;
    use crate::time::Timestamp;

    const CHAT: ChatId = ChatId::from_u128(7);

    fn msg(id: u128, parent: Option<u128>) -> Message {
        Message {
            id: MessageId::from_u128(id),
            chat_id: CHAT,
            parent_id: parent.map(MessageId::from_u128),
            role: match (parent, id % 2) {
                (None, _) => Role::System,
                (_, 0) => Role::User,
                _ => Role::Assistant,
            },
            content: format!("m{id}"),
            status: MessageStatus::Complete,
            created_at: Timestamp::from_unix_micros(id as i64),
            generation: None,
        }
    }

    fn ids(messages: &[&Message]) -> Vec<u128> {
        messages.iter().map(|m| m.id.as_u128()).collect()
    }

    #[test]
    fn a_branching_tree_gives_root_to_leaf_paths_and_siblings() {
        let tree = ConversationTree::build(
            CHAT,
            vec![
                msg(5, Some(2)),
                msg(1, None),
                msg(2, Some(1)),
                msg(3, Some(2)),
                msg(4, Some(1)),
            ],
        )
        .unwrap();
        assert_eq!(
            ids(&tree.path_to(MessageId::from_u128(5)).unwrap()),
            [1, 2, 5]
        );
        assert_eq!(
            ids(&tree.children(MessageId::from_u128(2)).unwrap()),
            [3, 5]
        );
        assert_eq!(ids(&tree.siblings(MessageId::from_u128(3)).unwrap()), [5]);
        assert!(tree.siblings(MessageId::from_u128(1)).unwrap().is_empty());
        assert_eq!(
            tree.latest_leaf_under(MessageId::from_u128(1)).unwrap(),
            MessageId::from_u128(4)
        );
    }

    #[test]
    fn a_second_root_is_rejected() {
        let mut two = msg(2, None);
        two.role = Role::System;
        let err = ConversationTree::build(CHAT, vec![msg(1, None), two]).unwrap_err();
        assert!(matches!(err, TreeError::SecondRoot { .. }));
    }

    #[test]
    fn a_cycle_is_rejected() {
        let err =
            ConversationTree::build(CHAT, vec![msg(1, None), msg(2, Some(3)), msg(3, Some(2))])
                .unwrap_err();
        assert!(matches!(err, TreeError::Cycle(_)), "{err:?}");
    }

    #[test]
    fn a_parent_from_another_chat_is_rejected() {
        let err = ConversationTree::build(CHAT, vec![msg(1, None), msg(2, Some(99))]).unwrap_err();
        assert_eq!(
            err,
            TreeError::ParentNotInChat {
                message: MessageId::from_u128(2),
                parent: MessageId::from_u128(99)
            }
        );
        let mut foreign = msg(3, Some(1));
        foreign.chat_id = ChatId::from_u128(8);
        let mut tree = ConversationTree::build(CHAT, vec![msg(1, None)]).unwrap();
        assert_eq!(
            tree.insert(foreign),
            Err(TreeError::ForeignMessage(MessageId::from_u128(3)))
        );
    }

    #[test]
    fn no_messages_and_no_root_are_rejected() {
        assert_eq!(
            ConversationTree::build(CHAT, vec![]).unwrap_err(),
            TreeError::Empty
        );
    }

    #[test]
    fn only_the_root_may_be_a_system_message() {
        let mut sys = msg(2, Some(1));
        sys.role = Role::System;
        assert_eq!(
            ConversationTree::build(CHAT, vec![msg(1, None), sys]).unwrap_err(),
            TreeError::MisplacedSystemMessage(MessageId::from_u128(2))
        );
    }

    #[test]
    fn removing_a_subtree_returns_it_and_the_surviving_parent() {
        let mut tree = ConversationTree::build(
            CHAT,
            vec![
                msg(1, None),
                msg(2, Some(1)),
                msg(3, Some(2)),
                msg(4, Some(3)),
                msg(6, Some(1)),
            ],
        )
        .unwrap();
        let (removed, parent) = tree.remove_subtree(MessageId::from_u128(2)).unwrap();
        assert_eq!(
            removed.iter().map(|m| m.as_u128()).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(parent, MessageId::from_u128(1));
        assert_eq!(tree.len(), 2);
        assert_eq!(
            tree.remove_subtree(MessageId::from_u128(1)),
            Err(TreeError::RootRemoval)
        );
    }

    #[test]
    fn a_ten_thousand_message_chain_needs_no_recursion() {
        let mut messages = vec![msg(1, None)];
        for id in 2..=10_000u128 {
            messages.push(msg(id, Some(id - 1)));
        }
        let tree = ConversationTree::build(CHAT, messages).unwrap();
        assert_eq!(
            tree.path_to(MessageId::from_u128(10_000)).unwrap().len(),
            10_000
        );
        assert_eq!(tree.subtree_ids(MessageId::from_u128(1)).len(), 10_000);
    }

    /// A small deterministic generator, so the property test needs no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self, bound: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % bound as u64) as usize
        }
    }

    fn assert_consistent(tree: &ConversationTree) {
        let rebuilt =
            ConversationTree::build(CHAT, tree.messages().cloned().collect()).expect("valid");
        assert_eq!(rebuilt.len(), tree.len());
        for m in tree.messages() {
            let path = tree.path_to(m.id).unwrap();
            assert_eq!(path.first().unwrap().id, tree.root().id);
            assert_eq!(path.last().unwrap().id, m.id);
            for pair in path.windows(2) {
                assert_eq!(pair[1].parent_id, Some(pair[0].id));
            }
            assert_eq!(ids(&path), ids(&rebuilt.path_to(m.id).unwrap()));
            for s in tree.siblings(m.id).unwrap() {
                assert_eq!(s.parent_id, m.parent_id);
                assert_ne!(s.id, m.id);
            }
            let leaf = tree.latest_leaf_under(m.id).unwrap();
            assert!(tree.children(leaf).unwrap().is_empty());
            assert!(tree.path_to(leaf).unwrap().iter().any(|p| p.id == m.id));
        }
        assert_eq!(tree.subtree_ids(tree.root().id).len(), tree.len());
    }

    #[test]
    fn any_sequence_of_appends_branches_and_deletes_keeps_the_tree_valid() {
        for seed in 1..=200u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut tree = ConversationTree::build(CHAT, vec![msg(1, None)]).unwrap();
            let mut next_id = 2u128;
            for _ in 0..60 {
                let all: Vec<MessageId> = tree.messages().map(|m| m.id).collect();
                let target = all[rng.next(all.len())];
                if rng.next(5) == 0 && target != tree.root().id {
                    let before = tree.len();
                    let subtree = tree.subtree_ids(target).len();
                    let (removed, parent) = tree.remove_subtree(target).unwrap();
                    assert_eq!(removed.len(), subtree);
                    assert_eq!(tree.len(), before - subtree);
                    assert!(tree.contains(parent));
                } else {
                    tree.insert(msg(next_id, Some(target.as_u128()))).unwrap();
                    next_id += 1;
                }
                assert_consistent(&tree);
            }
        }
    }
}
