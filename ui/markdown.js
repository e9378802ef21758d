// A small Markdown renderer for descriptions (model cards): it builds Preact elements, never HTML text, so raw
// HTML in a description is shown as the text it is and can run nothing. Links keep only http(s), mailto and
// in-page addresses, and open with rel="noopener noreferrer"; images become links (nothing is fetched from
// another host). Covers what model cards use: headings, paragraphs, lists, code, emphasis, links, rules.

import { h } from "preact";

const SAFE_LINK = /^(https?:|mailto:|#|\/(?!\/))/i;

/** Where a link may go, or null for an address that could run script (`javascript:`, `data:`, …). */
export function safeHref(href) {
  const trimmed = href.trim();
  // Browsers ignore control characters and spaces inside a scheme (`java\tscript:`): judge without them.
  const squashed = trimmed.replace(/[\u0000-\u0020\u007f]/g, "");
  return SAFE_LINK.test(squashed) ? trimmed : null;
}

/** Inline Markdown -> children: `code`, **strong**, *em* / _em_, [text](href), ![alt](src), <autolinks>. */
function inline(text, keyPrefix = "i") {
  const out = [];
  const pattern =
    /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([\s\S]+?)\*\*|__([\s\S]+?)__|\*([^*\s][^*]*?)\*|\b_([^_\s][^_]*?)_\b|(!?)\[([^\]]*)\]\(([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+"[^"]*")?\)|<(https?:\/\/[^\s>]+)>/g;
  let last = 0;
  let match;
  let n = 0;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) out.push(text.slice(last, match.index));
    const key = `${keyPrefix}${n++}`;
    if (match[1]) out.push(h("code", { key }, match[2].trim()));
    else if (match[3] !== undefined || match[4] !== undefined) {
      out.push(h("strong", { key }, inline(match[3] ?? match[4], `${key}.`)));
    } else if (match[5] !== undefined || match[6] !== undefined) {
      out.push(h("em", { key }, inline(match[5] ?? match[6], `${key}.`)));
    } else if (match[8] !== undefined) {
      const href = safeHref(match[9]);
      const label = match[7] ? match[8] || match[9] : inline(match[8], `${key}.`);
      out.push(href === null
        ? h("span", { key, class: "unsafe-link", title: "link removed: not an http(s) or mailto address" }, label)
        : h("a", { key, href, rel: "noopener noreferrer", target: "_blank" }, label));
    } else if (match[10]) {
      out.push(h("a", { key, href: match[10], rel: "noopener noreferrer", target: "_blank" }, match[10]));
    }
    last = pattern.lastIndex;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** Markdown text -> an array of Preact block elements. */
export function renderMarkdown(source) {
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  const blocks = [];
  let i = 0;
  const key = () => `b${blocks.length}`;
  const isBlank = (line) => line.trim() === "";
  const listItem = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i += 1;
      continue;
    }
    const fence = line.match(/^\s{0,3}(```|~~~)\s*([\w+-]*)/);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence[1])) body.push(lines[i++]);
      i += 1;
      blocks.push(h("pre", { key: key(), class: "code" }, h("code", null, body.join("\n"))));
      continue;
    }
    const heading = line.match(/^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/);
    if (heading) {
      // Within a page whose own title is the h1: a card's headings start at h3.
      const level = Math.min(6, heading[1].length + 2);
      blocks.push(h(`h${level}`, { key: key() }, inline(heading[2])));
      i += 1;
      continue;
    }
    if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      blocks.push(h("hr", { key: key() }));
      i += 1;
      continue;
    }
    const first = line.match(listItem);
    if (first) {
      const ordered = /\d/.test(first[1]);
      const items = [];
      while (i < lines.length) {
        const item = lines[i].match(listItem);
        if (item && /\d/.test(item[1]) === ordered) {
          items.push(item[2]);
          i += 1;
        } else if (!isBlank(lines[i]) && /^\s{2,}/.test(lines[i]) && items.length > 0) {
          items[items.length - 1] += ` ${lines[i].trim()}`;
          i += 1;
        } else break;
      }
      blocks.push(h(ordered ? "ol" : "ul", { key: key() },
        items.map((text, n) => h("li", { key: n }, inline(text, `l${n}.`)))));
      continue;
    }
    if (/^\s{0,3}>/.test(line)) {
      const quoted = [];
      while (i < lines.length && /^\s{0,3}>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s{0,3}>\s?/, ""));
      blocks.push(h("blockquote", { key: key() }, renderMarkdown(quoted.join("\n"))));
      continue;
    }
    const paragraph = [];
    while (i < lines.length && !isBlank(lines[i]) && !listItem.test(lines[i]) && !/^\s{0,3}(#{1,6}\s|```|~~~|>)/.test(lines[i])) {
      paragraph.push(lines[i++].trim());
    }
    if (paragraph.length === 0) paragraph.push(lines[i++].trim());
    blocks.push(h("p", { key: key() }, inline(paragraph.join(" "))));
  }
  return blocks;
}

export function Markdown({ text }) {
  return h("div", { class: "markdown" }, renderMarkdown(text));
}
