/** The keys of a JSON object's top level, in order, duplicates kept (JSON.parse would drop them). */
export function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let i = 0;
  let expectKey = false;
  while (i < json.length) {
    const ch = json[i];
    if (ch === '"') {
      let end = i + 1;
      while (end < json.length && json[end] !== '"') end += json[end] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(json.slice(i, end + 1)) as string);
      expectKey = false;
      i = end + 1;
      continue;
    }
    if (ch === "{" || ch === "[") depth += 1;
    else if (ch === "}" || ch === "]") depth -= 1;
    if (depth === 1 && (ch === "{" || ch === ",")) expectKey = true;
    i += 1;
  }
  return keys;
}

/** Keys that appear more than once at the top level of a JSON log line. */
export function duplicatedKeys(json: string): string[] {
  const keys = topLevelKeys(json);
  return keys.filter((key, index) => keys.indexOf(key) !== index);
}
