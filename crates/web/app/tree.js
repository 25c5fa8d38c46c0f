// The conversation tree as the API gives it ({root_uuid, current_leaf_uuid, nodes: [{uuid,
// parent_uuid, role, content, …, children}]}) and the questions the view asks of it. No DOM.

export class Tree {
  constructor(response) {
    this.root = response.root_uuid;
    this.leaf = response.current_leaf_uuid;
    this.nodes = new Map();
    for (const { children, ...message } of response.nodes) {
      this.nodes.set(message.uuid, { message, children });
    }
  }

  message(id) {
    return this.nodes.get(id)?.message;
  }

  /** Messages from the root to `leaf` (default: the chat's current leaf). */
  path(leaf = this.leaf) {
    const path = [];
    for (let id = leaf; id; id = this.nodes.get(id)?.message.parent_uuid) {
      const node = this.nodes.get(id);
      if (!node) break;
      path.push(node.message);
    }
    return path.reverse();
  }

  /** `[index, count]` of `id` among its parent's children (1-based). */
  position(id) {
    const parent = this.message(id)?.parent_uuid;
    const siblings = parent ? this.nodes.get(parent)?.children || [id] : [id];
    return [siblings.indexOf(id) + 1, siblings.length, siblings];
  }

  /** The leaf reached from `id` by always taking the newest child. */
  leafUnder(id) {
    let current = id;
    for (;;) {
      const children = this.nodes.get(current)?.children || [];
      if (children.length === 0) return current;
      current = children[children.length - 1];
    }
  }

  /** The sibling `step` places from `id` (wrapping), or null when it has none. */
  sibling(id, step) {
    const [index, count, siblings] = this.position(id);
    if (count < 2) return null;
    return siblings[(index - 1 + step + count) % count];
  }
}

/** One line of plain text from Markdown (tree labels, list previews). */
export function plainLine(text) {
  return (text || '').replace(/[*_`#>~]+/g, '').replace(/\s+/g, ' ').trim();
}
