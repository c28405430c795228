// Interface text in English and Chinese. The language follows the browser until the switch sets it.
export const TEXT = {
  en: {
    home: "msearch home", placeholder: "Search your media — words in any language, or drop a picture or a sound",
    search: "Search", pick: "Search by a picture or a sound", status: "Status", language: "中文",
    folder: "Folder", from: "From", to: "To", sort: "Order", relevance: "Best match", newest: "Newest first",
    more: "Load more", drop: "Drop a picture or a sound to search with it", empty: "Nothing found.",
    kinds: { video: "Video", audio: "Audio", page: "Pages", image: "Images", text: "Text" },
    results: (from, to, total, exact) => `Results ${from}–${to} of ${total}${exact ? "" : "+"}`,
    took: (ms) => `${ms} ms`, play: "Play", stop: "Stop", fromHere: "Play from here", back: "−5 s", fwd: "+5 s",
    like: "More like this", copy: "Copy path", copied: "Copied", open: "Open", openPage: "Open the PDF at this page",
    page: (n) => `p. ${n}`, moments: (n) => `${n} matching moments`, likeOf: (name) => `Like ${name}`,
    exampleOf: (name) => `Searching with ${name}`, clear: "Clear",
    statusTitle: "Index status", files: "Files", kind: "Kind", points: "Vectors", space: "Space", model: "Model",
    loaded: "Query models loaded", missing: "Models missing", failed: "Failed files", reason: "Reason",
    partly: "Files indexed from what could be read", lost: "What was lost",
    none: "None", runs: "Index runs in progress", queue: "Waiting to be indexed", noRuns: "No run in progress.",
    control: "Control", token: "API token", tokenHelp: "The token is in the data dir's api_token file. It is kept in this browser.",
    save: "Save", forget: "Forget", indexFolder: "Index a folder", index: "Index", reset: "Reset",
    resetWhat: { index: "Drop all vectors (files are indexed again)", database: "Forget all files", all: "Everything: a data dir as new" },
    confirmReset: "Reset the index? This cannot be undone.", queued: (p) => `Queued: ${p}`, done: "Done",
    error: (m) => `Error: ${m}`, statusNames: { indexed: "indexed", failed: "failed", skipped: "skipped", pending: "pending" },
  },
  zh: {
    home: "msearch 首页", placeholder: "搜索你的媒体——任意语言的词句，或拖入一张图片、一段声音",
    search: "搜索", pick: "用图片或声音搜索", status: "状态", language: "English",
    folder: "文件夹", from: "起", to: "止", sort: "排序", relevance: "最相关", newest: "最新",
    more: "加载更多", drop: "拖入图片或声音来搜索", empty: "没有找到结果。",
    kinds: { video: "视频", audio: "音频", page: "文档页", image: "图片", text: "文本" },
    results: (from, to, total, exact) => `第 ${from}–${to} 条，共 ${total}${exact ? "" : "+"} 条`,
    took: (ms) => `${ms} 毫秒`, play: "播放", stop: "停止", fromHere: "从此处播放", back: "−5 秒", fwd: "+5 秒",
    like: "找相似", copy: "复制路径", copied: "已复制", open: "打开", openPage: "在此页打开 PDF",
    page: (n) => `第 ${n} 页`, moments: (n) => `${n} 个匹配片段`, likeOf: (name) => `与 ${name} 相似`,
    exampleOf: (name) => `以 ${name} 搜索`, clear: "清除",
    statusTitle: "索引状态", files: "文件", kind: "类型", points: "向量", space: "空间", model: "模型",
    loaded: "已加载的查询模型", missing: "缺少的模型", failed: "失败的文件", reason: "原因",
    partly: "仅部分可读的文件", lost: "缺失的部分",
    none: "无", runs: "正在进行的索引", queue: "等待索引", noRuns: "没有正在进行的索引。",
    control: "控制", token: "API 令牌", tokenHelp: "令牌在数据目录的 api_token 文件中，将保存在此浏览器里。",
    save: "保存", forget: "清除", indexFolder: "索引文件夹", index: "索引", reset: "重置",
    resetWhat: { index: "删除所有向量（文件将重新索引）", database: "忘记所有文件", all: "全部：如同新的数据目录" },
    confirmReset: "确定重置索引？此操作不可撤销。", queued: (p) => `已加入队列：${p}`, done: "完成",
    error: (m) => `错误：${m}`, statusNames: { indexed: "已索引", failed: "失败", skipped: "已跳过", pending: "待处理" },
  },
};

export function pickLanguage() {
  const saved = localStorage.getItem("msearch.lang");
  if (saved === "en" || saved === "zh") return saved;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}
