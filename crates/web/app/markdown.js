// Markdown for answers: marked renders, every raw HTML block or tag in the text is shown as
// text (never parsed), DOMPurify sanitises the result (links, attributes) and highlight.js
// colours code blocks. Nothing the model writes is ever executed.

import { Marked } from 'marked';
import DOMPurify from 'dompurify';
import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import c from 'highlight.js/lib/languages/c';
import cpp from 'highlight.js/lib/languages/cpp';
import css from 'highlight.js/lib/languages/css';
import go from 'highlight.js/lib/languages/go';
import java from 'highlight.js/lib/languages/java';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import python from 'highlight.js/lib/languages/python';
import rust from 'highlight.js/lib/languages/rust';
import sql from 'highlight.js/lib/languages/sql';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';
import yaml from 'highlight.js/lib/languages/yaml';

for (const [name, language] of Object.entries({
  bash, c, cpp, css, go, java, javascript, json, python, rust, sql, typescript, xml, yaml,
})) {
  hljs.registerLanguage(name, language);
}

const escape = (text) =>
  text.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]);

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML in the answer is text, shown as written.
    html({ text }) {
      return escape(text);
    },
  },
});

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

/** Renders `text` into `el` (replacing what was there). */
export function renderMarkdown(el, text) {
  const html = marked.parse(text || '', { async: false });
  el.innerHTML = DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ['style', 'form', 'input'] });
  for (const block of el.querySelectorAll('pre code')) {
    const language = /language-([\w-]+)/.exec(block.className)?.[1];
    if (language && hljs.getLanguage(language)) {
      block.innerHTML = hljs.highlight(block.textContent, { language, ignoreIllegals: true }).value;
      block.classList.add('hljs');
    } else {
      block.classList.add('hljs');
    }
  }
}
