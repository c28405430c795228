"""Write a small sample folder: text notes in English and Chinese (one in GBK), drawn images,
a video, spoken recordings (when espeak-ng is installed) and one broken file, so that a first
run shows every outcome. Usage: make_sample.py DIR"""

import sys
from pathlib import Path

from PIL import Image, ImageDraw

DOCS = {
    "notes/budget-2027.md": "# Budget 2027\n\nThe finance committee approved next year's spending plan. "
                            "Marketing gets 12% more; travel is cut by a third. The interviewee says the "
                            "budget for the documentary is final.",
    "notes/garden.txt": "Tomatoes need full sun, rich soil and regular watering during the summer months. "
                        "Prune the roses in early spring.",
    "notes/recipe.txt": "Simmer the onions slowly in butter until they turn golden and sweet, then add stock.",
    "notes/astronomy.txt": "The telescope revealed four moons circling the giant planet Jupiter.",
    "notes/football.txt": "The striker scored twice in the second half and the home side won the match.",
    "notes/rain-zh.txt": ("红色汽车在雨中缓缓行驶，司机打开了雨刷。镜头从街角慢慢推近。", "gbk"),
    "notes/meeting-zh.md": ("# 周一会议\n\n预算会议推迟到下周一上午九点。剪辑师需要在周五前交付第一版。", "utf-8"),
}
SHAPES = {
    "images/red-circle.png": ((220, 30, 30), "ellipse"),
    "images/blue-square.png": ((30, 60, 220), "rectangle"),
    "images/green-triangle.jpg": ((30, 170, 60), "triangle"),
    "images/yellow-sun.jpg": ((250, 210, 40), "ellipse"),
}


def main(root: Path) -> None:
    for name, content in DOCS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text, encoding = content if isinstance(content, tuple) else (content, "utf-8")
        path.write_bytes(text.encode(encoding))
    for name, (color, shape) in SHAPES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (320, 240), (245, 245, 240))
        draw = ImageDraw.Draw(img)
        if shape == "triangle":
            draw.polygon([(160, 30), (60, 210), (260, 210)], fill=color)
        else:
            getattr(draw, shape)([80, 40, 240, 200], fill=color)
        img.save(path)
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    make_scan(root / "scans" / "delivery-notes.pdf")
    spoken = make_speech(root / "audio")
    make_video(root / "videos" / "three-shots.mp4", spoken.get("interview.wav"))
    voice = f"{len(spoken)} spoken recordings" if spoken else "no recordings (install espeak-ng for speech)"
    print(f"sample folder ready: {root} ({len(DOCS)} notes, {len(SHAPES)} images, 1 scanned PDF, 1 video, {voice}, "
          "1 broken file)")


SCANS = [
    ["Delivery note 1187", "Harbour office, pier 4", "12 crates of lemons"],
    ["Delivery note 1188", "Mountain lodge", "3 barrels of olive oil"],
]


def make_scan(path: Path) -> None:
    """A two-page PDF of page images only (like a scanner makes): its words need OCR."""
    from PIL import ImageFont

    path.parent.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=56)
    pages = []
    for lines in SCANS:
        page = Image.new("RGB", (1240, 1754), (252, 252, 250))
        draw = ImageDraw.Draw(page)
        for i, line in enumerate(lines):
            draw.text((120, 200 + 110 * i), line, fill=(25, 25, 35), font=font)
        pages.append(page)
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=150)


SPEECH = {  # file: (seconds of silence first, what is said)
    "interview.wav": (3.0, "The interviewee says the budget for the documentary is final."),
    "voice-memo.mp3": (1.0, "Remember to call the harbour office about the ferry timetable."),
}


def make_speech(folder: Path) -> dict[str, Path]:
    """Spoken recordings made by espeak-ng (none when it is not installed)."""
    import shutil
    import subprocess

    from msearch.media.video import ffmpeg_binary

    if shutil.which("espeak-ng") is None:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, (lead, words) in SPEECH.items():
        raw = folder / f".{name}.raw.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), words], check=True, capture_output=True)
        subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(raw), "-af",
                        f"adelay={int(lead * 1000)}:all=1,apad=pad_dur=1", str(folder / name)], check=True)
        raw.unlink()
        made[name] = folder / name
    return made


def make_video(path: Path, soundtrack: Path | None = None) -> None:
    """Three 4-second shots (cuts at 4 s and 8 s), made by FFmpeg's test sources; with a spoken
    soundtrack when one is given."""
    import subprocess

    from msearch.media.video import ffmpeg_binary

    path.parent.mkdir(parents=True, exist_ok=True)
    shots = ["testsrc2", "smptebars", "color=c=red"]
    inputs = []
    for name in shots:
        sep = ":" if "=" in name else "="
        inputs += ["-f", "lavfi", "-i", f"{name}{sep}size=640x360:rate=25:duration=4"]
    graph = "".join(f"[{i}:v]" for i in range(len(shots))) + f"concat=n={len(shots)}:v=1[v]"
    sound = ["-i", str(soundtrack), "-map", f"{len(shots)}:a", "-af", "apad", "-c:a", "aac", "-shortest"] \
        if soundtrack else []
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *inputs, *sound[:2],
                    "-filter_complex", graph, "-map", "[v]", *sound[2:], "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "sample"))
