#!/usr/bin/env python3
"""Draws a terminal screen captured with colours (`tmux capture-pane -e -p`) as a PNG.

Usage: ansi_png.py CAPTURE.txt OUT.png [--cols N --rows N]

Each cell is drawn at a fixed size with DejaVu Sans Mono; block elements, braille dots and box
lines are drawn as shapes so they join up as they do in a terminal.
"""
import argparse
import re

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
SIZE = 15
DEFAULT_FG = (0xD0, 0xD0, 0xD0)
DEFAULT_BG = (0x1C, 0x1C, 0x1C)
BASE16 = [
    (0x00, 0x00, 0x00), (0xCD, 0x31, 0x31), (0x0D, 0xBC, 0x79), (0xE5, 0xE5, 0x10),
    (0x24, 0x72, 0xC8), (0xBC, 0x3F, 0xBC), (0x11, 0xA8, 0xCD), (0xE5, 0xE5, 0xE5),
    (0x66, 0x66, 0x66), (0xF1, 0x4C, 0x4C), (0x23, 0xD1, 0x8B), (0xF5, 0xF5, 0x43),
    (0x3B, 0x8E, 0xEA), (0xD6, 0x70, 0xD6), (0x29, 0xB8, 0xDB), (0xFF, 0xFF, 0xFF),
]


def xterm256(n):
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + (n - 232) * 10
    return (v, v, v)


# Box-drawing characters as the directions their lines leave the cell's centre.
LINES = {
    "─": "lr", "━": "lr", "│": "ud", "┃": "ud", "┌": "rd", "┐": "ld", "└": "ru", "┘": "lu",
    "╭": "rd", "╮": "ld", "╰": "ru", "╯": "lu", "├": "udr", "┤": "udl", "┬": "lrd", "┴": "lru",
    "┼": "lrud", "╶": "r", "╴": "l", "╵": "u", "╷": "d",
}


def parse(text):
    """Rows of cells (char, fg, bg, bold) from text with SGR escapes."""
    rows = []
    for line in text.split("\n"):
        fg, bg, bold, reverse = None, None, False, False
        cells = []
        for token in re.split(r"(\x1b\[[0-9;:]*m)", line):
            if token.startswith("\x1b["):
                codes = [int(c) if c else 0 for c in re.split(r"[;:]", token[2:-1])] or [0]
                i = 0
                while i < len(codes):
                    c = codes[i]
                    if c == 0:
                        fg, bg, bold, reverse = None, None, False, False
                    elif c == 1:
                        bold = True
                    elif c == 22:
                        bold = False
                    elif c == 7:
                        reverse = True
                    elif c == 27:
                        reverse = False
                    elif 30 <= c <= 37:
                        fg = BASE16[c - 30]
                    elif 90 <= c <= 97:
                        fg = BASE16[c - 90 + 8]
                    elif 40 <= c <= 47:
                        bg = BASE16[c - 40]
                    elif 100 <= c <= 107:
                        bg = BASE16[c - 100 + 8]
                    elif c == 39:
                        fg = None
                    elif c == 49:
                        bg = None
                    elif c in (38, 48) and i + 1 < len(codes):
                        if codes[i + 1] == 5 and i + 2 < len(codes):
                            colour = xterm256(codes[i + 2])
                            i += 2
                        elif codes[i + 1] == 2 and i + 4 < len(codes):
                            colour = tuple(codes[i + 2:i + 5])
                            i += 4
                        else:
                            colour = None
                        if c == 38:
                            fg = colour
                        else:
                            bg = colour
                    i += 1
                continue
            for ch in token:
                f, b = fg or DEFAULT_FG, bg or DEFAULT_BG
                if reverse:
                    f, b = b, f
                cells.append((ch, f, b, bold))
        rows.append(cells)
    while rows and not rows[-1]:
        rows.pop()
    return rows


def draw_cell(draw, x, y, w, h, cell, fonts):
    ch, fg, bg, bold = cell
    draw.rectangle([x, y, x + w - 1, y + h - 1], fill=bg)
    code = ord(ch)
    if ch == " ":
        return
    if ch == "▀":
        draw.rectangle([x, y, x + w - 1, y + h // 2 - 1], fill=fg)
    elif ch == "▄":
        draw.rectangle([x, y + h // 2, x + w - 1, y + h - 1], fill=fg)
    elif ch == "█":
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=fg)
    elif 0x2581 <= code <= 0x2587:  # lower eighths
        top = y + h - (code - 0x2580) * h // 8
        draw.rectangle([x, top, x + w - 1, y + h - 1], fill=fg)
    elif 0x2800 <= code <= 0x28FF:  # braille: 2 columns of 4 dots
        bits = code - 0x2800
        order = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (0, 3), (1, 3)]
        for bit, (cx, cy) in enumerate(order):
            if bits & (1 << bit):
                px, py = x + (cx * 2 + 1) * w // 4, y + (cy * 2 + 1) * h // 8
                draw.rectangle([px - 1, py - 1, px + 1, py + 1], fill=fg)
    elif ch in LINES:
        cx, cy = x + w // 2, y + h // 2
        for d in LINES[ch]:
            end = {"l": (x, cy), "r": (x + w - 1, cy), "u": (cx, y), "d": (cx, y + h - 1)}[d]
            draw.line([(cx, cy), end], fill=fg, width=1)
    else:
        draw.text((x, y), ch, font=fonts[bold], fill=fg)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("capture")
    parser.add_argument("out")
    args = parser.parse_args()
    rows = parse(open(args.capture, encoding="utf-8").read())
    fonts = {False: ImageFont.truetype(FONT, SIZE), True: ImageFont.truetype(BOLD, SIZE)}
    ascent, descent = fonts[False].getmetrics()
    w, h = round(fonts[False].getlength("M")), ascent + descent
    cols = max(len(r) for r in rows)
    image = Image.new("RGB", (cols * w, len(rows) * h), DEFAULT_BG)
    draw = ImageDraw.Draw(image)
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            draw_cell(draw, c * w, r * h, w, h, cell, fonts)
    image.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
