#!/usr/bin/env python3
"""Rebuild tests/data/gold/human/pool.jsonl: replies written by real people to an upset person.

Issue 13, part 1 (collection only). Every line is a calibration example with EMPTY labels ({}):
two team members label it afterwards (see LABELLING.md), so the file is not a calibration file
until it has been labelled (the calibrate loader requires at least one label a line).

Sources (each a public git repository, read with ``git --git-dir=DIR show HEAD:path``; the
snapshots used are the ones the search tool's ``fetch`` brings to /work/.mirror/<owner>+<name>/repo):

  --twitter     IBM/twitter-customer-care-document-prediction   (Apache-2.0)  test.json ONLY
  --incivility  vcu-swim-lab/incivility-dataset                 (MIT)         dataset/annotated_comment_level.csv
  --counsel     nbertagnolli/counsel-chat                       (MIT)         data/20200325_counsel_chat.csv
  --p4g         ohyj1002/persuasionforgood                      (Apache-2.0)  data/FullData/full_dialog.csv

The eligibility rule of each source is fixed in this file (ELIGIBILITY below, also written into
tests/data/gold/README.md) and was stated before any sample was drawn; the sample is then drawn at
random from the eligible pool with a fixed seed (random.Random("issue13-<source>")), one reply per
conversation / thread / question at most, and the train / held-out split is drawn with a second
fixed seed inside each source (40 % train, 60 % held-out) before any labelling.

Text handling (the same for every source): personal @handles -> @USER (company support handles
are kept), URLs -> <URL>, e-mail addresses -> <EMAIL>, HTML entities unescaped, fenced code ->
<CODE>, quoted lines ("> ...") dropped from GitHub replies. Long texts are cut at a sentence
boundary and marked " [...]": the upset message to about 700 characters, counsel-chat answers to
their first 3 sentences, GitHub replies to their first 4 sentences (when over 600 characters).

The script is deterministic: the same snapshots give the same file byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[3]

# How many replies each source contributes (drawn at random from its eligible pool).
TARGET = {"twcs": 200, "inc": 90, "cc": 75, "p4g": 60}
TRAIN_SHARE = 0.4
SEED = "issue13"

SOURCES = {
    "twcs": {
        "dataset": "Twitter customer care conversations (IBM, conversational document prediction)",
        "repo": "https://github.com/IBM/twitter-customer-care-document-prediction",
        "licence": "Apache-2.0",
        "file": "test.json",
        "situation": "twitter-customer-care",
        "channel": "public_post",
    },
    "inc": {
        "dataset": "Incivility in open-source issue threads (VCU SWIM lab)",
        "repo": "https://github.com/vcu-swim-lab/incivility-dataset",
        "licence": "MIT",
        "file": "dataset/annotated_comment_level.csv",
        "situation": "github-reply-to-uncivil-comment",
        "channel": "public_post",
    },
    "cc": {
        "dataset": "CounselChat (therapists answering people's questions)",
        "repo": "https://github.com/nbertagnolli/counsel-chat",
        "licence": "MIT",
        "file": "data/20200325_counsel_chat.csv",
        "situation": "counsel-chat-therapist-answer",
        "channel": "chat",
    },
    "p4g": {
        "dataset": "PersuasionForGood (persuader meeting pushback)",
        "repo": "https://github.com/ohyj1002/persuasionforgood",
        "licence": "Apache-2.0",
        "file": "data/FullData/full_dialog.csv",
        "situation": "persuasion-pushback-chat",
        # A private one-to-one chat between two study participants. The brief's channel values are
        # front_desk|phone|chat|public_post; "chat" is the closest, but note that the rubric counts
        # "chat" as a public channel (take_offline applies): see LABELLING.md.
        "channel": "chat",
    },
}

ELIGIBILITY = {
    "twcs": "a customer-care agent's tweet (a turn of dialogContent, or the closing agentURL tweet) that "
    "directly follows a customer tweet reporting a problem or complaining (COMPLAINT_RE below: a negation "
    "such as not/doesn't/can't/never/still, or a problem or complaint word such as issue, error, broken, "
    "stuck, wrong, charged, refund, help, why, worst, ridiculous, or '!!' / '??'); one reply per "
    "conversation (a random one when several qualify); test.json only",
    "inc": "the comment that directly follows, in the same issue thread, a comment the dataset's annotators "
    "marked with an uncivil feature (tbdf other than None: bitter frustration, impatience, mocking, "
    "insulting, vulgarity, entitlement, irony, threat, identity attack); the reply keeps at least 3 words "
    "after quotes and code are removed; one reply per uncivil comment, at most one per issue",
    "cc": "one answer (a random one) per question whose topic is one of DISTRESS_TOPICS (depression, anxiety, "
    "relationships, family conflict, self-esteem, trauma, grief, self-harm, anger, abuse, stress, ...; "
    "questions about counselling itself, ethics, diagnosis or the law are left out); answer >= 5 words",
    "p4g": "the persuader's turn that directly follows a persuadee turn pushing back (PUSHBACK_RE below: "
    "distrust, scam, skeptical, can't afford, not interested, don't want to donate, pushy, already give "
    "elsewhere, 'how do I know', overhead, ...); one reply per dialogue (a random one when several qualify)",
}

COMPLAINT_RE = re.compile(
    r"(\b(not|isn.?t|doesn.?t|don.?t|won.?t|can.?t|cannot|didn.?t|never|no one|nobody|still|again|yet)\b"
    r"|\b(broke\w*|issue|problem|error|fail\w*|crash\w*|stuck|wrong|worst|terrible|awful|horrible|ridiculous"
    r"|useless|unacceptable|disappoint\w*|frustrat\w*|annoy\w*|angry|upset|fed up|sick of|waste|refund"
    r"|complain\w*|help|why|wtf|fix|lost|missing|charged|cancel\w*|slow|bad|poor|hate|disgust\w*|joke"
    r"|shame|scam)\b|!!|\?\?)",
    re.I,
)

PUSHBACK_RE = re.compile(
    r"\b(scam\w*|don.?t trust|not sure (about|i)|skeptic\w*|sceptic\w*|can.?t afford|not interested|no thanks"
    r"|no thank you|i.?d rather not|i (won.?t|will not|don.?t want to|do not want to) donate|don.?t (really )?want to"
    r"|not going to donate|annoy\w*|pushy|stop asking|already (donate|give)|prefer to donate (to|locally)"
    r"|how do i know|fraud|waste|suspicious|overhead|not comfortable|i.?m not (going|donating|giving))\b",
    re.I,
)

DISTRESS_TOPICS = {
    "depression",
    "anxiety",
    "relationships",
    "intimacy",
    "parenting",
    "family-conflict",
    "self-esteem",
    "relationship-dissolution",
    "trauma",
    "behavioral-change",
    "marriage",
    "anger-management",
    "lgbtq",
    "substance-abuse",
    "spirituality",
    "workplace-relationships",
    "domestic-violence",
    "social-relationships",
    "grief-and-loss",
    "self-harm",
    "sleep-improvement",
    "eating-disorders",
    "stress",
    "children-adolescents",
    "addiction",
    "human-sexuality",
    "military-issues",
}
# left out: counseling-fundamentals, professional-ethics, diagnosis, legal-regulatory (questions about
# therapy, ethics, labels or the law, not a person in distress)

UNCIVIL_KEEP_ABUSIVE = {
    "insulting",
    "vulgarity",
    "threat",
    "identity attack/name-calling",
    "identity attacks/name-calling",
}

# Transfers: the reply hands the person to another named team, line or person (context.transferring).
TRANSFER_RE = re.compile(
    r"\b(transfer\w*|put(ting)? you through|connect(ing)? you (with|to)"
    r"|pass(ed|ing)? (this|it|you) (on|along|over)?\s*to"
    r"|(contact|call|reach out to|get in touch with|speak (to|with)|talk (to|with)) (our|the) [\w ]{0,30}?"
    r"(team|support|department|experts?|specialists?|agents?|engineers?|advisors?|line|desk|partners?|store|bank|branch)"
    r"|escalat\w+ (this|it|your))\b",
    re.I,
)

URL_RE = re.compile(r"(https?://\S+|www\.\S+|pic\.twitter\.com/\S+|\bapple\.co/\S+|\bbit\.ly/\S+)", re.I)
EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")
HANDLE_RE = re.compile(r"(?<![\w@])@(\w{1,30})")
FENCE_RE = re.compile(r"```.*?(```|$)", re.S)
SENT_RE = re.compile(r"(?<=[.!?])(?:\s+|(?=[A-Z\"']))")

NOT_NAMES = {
    "hi",
    "hello",
    "hey",
    "there",
    "team",
    "sorry",
    "thanks",
    "thank",
    "yes",
    "no",
    "okay",
    "ok",
    "great",
    "absolutely",
    "happy",
    "oh",
    "please",
    "apologies",
    "welcome",
    "friend",
    "folks",
    "all",
    "everyone",
    "we",
    "i",
    "you",
    "good",
    "morning",
    "afternoon",
    "evening",
    "howdy",
    "greetings",
    "dear",
    "sure",
    "glad",
    "ah",
    "aw",
    "awesome",
    "hmm",
    "well",
    "so",
    "and",
    "the",
    "that",
    "this",
    "if",
    "for",
    "to",
    "our",
    "your",
    "us",
    "let",
    "could",
    "can",
    "would",
    "do",
    "does",
    "is",
    "are",
    "just",
    "totally",
    "gamers",
    "gamer",
    "player",
    "mate",
    "buddy",
    "pal",
    "sir",
    "madam",
    "ma",
    "mam",
    "maam",
}


BRANDS = {
    "hp",
    "apple",
    "google",
    "spotify",
    "youtube",
    "rockstar",
    "playstation",
    "adobe",
    "dropbox",
    "ebay",
    "mojang",
    "minecraft",
    "yahoo",
    "hulu",
    "zoom",
    "microsoft",
    "godaddy",
    "amazon",
    "xbox",
    "spectrum",
    "chase",
    "delta",
    "uber",
    "windows",
    "office",
    "mac",
    "iphone",
    "ipad",
    "android",
    "chrome",
    "gmail",
    "pixel",
    "twitter",
    "support",
    "premiere",
    "photoshop",
    "steam",
    "mail",
    "prime",
    "alexa",
    "kindle",
    "outlook",
    "skype",
    "teams",
}


def git_show(gitdir: str, path: str) -> str:
    out = subprocess.run(["git", f"--git-dir={gitdir}", "show", f"HEAD:{path}"], check=True, capture_output=True)
    return out.stdout.decode("utf-8")


def git_head(gitdir: str) -> str:
    out = subprocess.run(["git", f"--git-dir={gitdir}", "rev-parse", "HEAD"], check=True, capture_output=True)
    return out.stdout.decode().strip()


def clean(text: str, keep_handles: set[str] = frozenset()) -> str:
    text = html.unescape(text)
    text = FENCE_RE.sub(" <CODE> ", text)
    text = URL_RE.sub("<URL>", text)
    text = EMAIL_RE.sub("<EMAIL>", text)
    text = HANDLE_RE.sub(lambda m: m.group(0) if m.group(1).lower() in keep_handles else "@USER", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\s*\n\s*", "\n", text).strip()
    return text


def cut(text: str, max_chars: int | None = None, max_sentences: int | None = None) -> str:
    """Cut at a sentence boundary: first max_sentences sentences, or as many as fit max_chars."""
    sents = [s for s in SENT_RE.split(text) if s.strip()]
    if max_sentences is not None and len(sents) > max_sentences:
        return " ".join(s.strip() for s in sents[:max_sentences]) + " [...]"
    if max_chars is not None and len(text) > max_chars:
        kept: list[str] = []
        for s in sents:
            if kept and len(" ".join(kept + [s])) > max_chars:
                break
            kept.append(s.strip())
        out = " ".join(kept)
        if len(out) > max_chars + 200:  # one endless sentence: cut at a word
            out = out[:max_chars].rsplit(" ", 1)[0]
        return out + " [...]"
    return text


class Abuse:
    """The rubric's own `patient_abusive` patterns (rubrics/deescalation.yaml), apostrophes removed."""

    def __init__(self, rubric_path: Path):
        import yaml

        data = yaml.safe_load(rubric_path.read_text())
        self.patterns = [re.compile(p, re.I) for p in data["conditions"]["patient_abusive"]]

    def __call__(self, text: str) -> bool:
        t = text.replace("'", "").replace("\u2019", "")
        return any(p.search(t) for p in self.patterns)


def vocative_name(reply: str) -> str | None:
    """A first name the reply addresses the person by ("@USER Hi Don.", "@USER Nilesh, ...",
    "Thanks for letting us know, Leslie!"), else None.

    The Twitter data holds handles only; a name the agent uses came from the person's display name,
    so the agent knew it: it becomes context.persona_name (what the grader's use_name needs)."""
    body = re.sub(r"^(\s*(@USER\b|\(\d/\d\))[\s,]*)+", "", reply)
    greet = r"(?i:hi|hello|hey|dear|howdy|greetings|thanks|thank you|good (?:morning|afternoon|evening)|welcome)"
    patterns = [
        rf"^(?:{greet}[\s,]+(?:there[\s,]+)?)?([A-Z][a-z]{{1,20}})\s*[,!.:;-]",  # at the start
        rf"\b{greet},?\s+([A-Z][a-z]{{1,20}})\s*[,!.:;?]",  # after a greeting or thanks
        r",\s+([A-Z][a-z]{1,20})\s*[!.?]",  # at the end of a clause: "..., Leslie!"
    ]
    for pattern in patterns:
        for m in re.finditer(pattern, body):
            name = m.group(1)
            if name[0].isupper() and name.lower() not in NOT_NAMES and name.lower() not in BRANDS:
                return name
    return None


def example(
    src: str,
    n: int,
    history: list[dict],
    reply: str,
    abusive: bool,
    item: str,
    commit: str,
    persona_name: str | None = None,
    note: str | None = None,
) -> dict:
    meta = SOURCES[src]
    source = {
        "dataset": meta["dataset"],
        "repo": meta["repo"],
        "licence": meta["licence"],
        "commit": commit,
        "file": meta["file"],
        "item": item,
    }
    if note:
        source["note"] = note
    return {
        "id": f"h-{src}-{n:04d}",
        "rubric": "deescalation",
        "situation": meta["situation"],
        "context": {
            "persona_name": persona_name,
            "channel": meta["channel"],
            "patient_abusive": bool(abusive),
            "transferring": bool(TRANSFER_RE.search(reply)),
        },
        "history": history,
        "reply": reply,
        "labels": {},
        "source": source,
    }


def draw(src: str, pool: list, k: int) -> list:
    rng = random.Random(f"{SEED}-{src}")
    print(f"{src}: eligible pool {len(pool)}, drawing {min(k, len(pool))}")
    if len(pool) < k:
        print(f"warning: {src}: only {len(pool)} eligible, wanted {k}", file=sys.stderr)
        k = len(pool)
    return rng.sample(pool, k)


# ------------------------------------------------------------------------------------------- sources


def twitter(gitdir: str, abuse: Abuse) -> list[dict]:
    commit = git_head(gitdir)
    convs = json.loads(git_show(gitdir, "test.json"))  # NEVER dev.json: reserved for independent evaluation
    keep = set()
    for c in convs:
        keep.add(c["dialogHeader"]["company"].lower())
        for t in c["dialogContent"]:
            if "agent" in t:
                keep.add(t["agent"].lower())
    # brand accounts customers tag besides the support handles
    keep |= {
        "hp",
        "apple",
        "google",
        "spotify",
        "youtube",
        "rockstargames",
        "playstation",
        "adobe",
        "dropbox",
        "ebay",
        "mojang",
        "minecraft",
        "yahoo",
        "hulu",
        "wellsfargo",
        "zoom",
        "microsoft",
        "godaddy",
        "amazon",
        "xbox",
        "spectrum",
        "chase",
        "tmobile",
        "delta",
        "uber",
        "creativecloud",
        "adobecare",
        "googlechrome",
        "gmail",
        "googleplay",
        "spotifycares",
        "askplaystation",
        "mojangsupport",
    }
    rng = random.Random(f"{SEED}-twcs-within")
    pool = []
    for ci, c in enumerate(convs):
        turns = list(c["dialogContent"]) + [
            {
                "agent": c["dialogHeader"]["company"],
                "message": c["agentURL"]["url_utterance"],
                "tweet_ID": c["agentURL"]["tweet_ID"],
            }
        ]
        cands = [
            i
            for i in range(1, len(turns))
            if "agent" in turns[i] and "client" in turns[i - 1] and COMPLAINT_RE.search(turns[i - 1]["message"])
        ]
        if cands:
            pool.append((ci, rng.choice(cands), turns, c["dialogHeader"]["sessionID"]))
    out = []
    for n, (ci, i, turns, sid) in enumerate(draw("twcs", pool, TARGET["twcs"]), 1):
        hist = []
        for t in turns[max(0, i - 3) : i]:
            hist.append(
                {
                    "role": "patient" if "client" in t else "trainee",
                    "content": cut(clean(t["message"], keep), max_chars=700),
                }
            )
        while hist and hist[0]["role"] == "trainee":
            hist.pop(0)
        reply = clean(turns[i]["message"], keep)
        upset = turns[i - 1]["message"]
        out.append(
            example(
                "twcs",
                n,
                hist,
                reply,
                abuse(upset),
                f"test.json[{ci}] sessionID={sid} agent tweet_ID={turns[i]['tweet_ID']}",
                commit,
                persona_name=vocative_name(reply),
            )
        )
    return out


def incivility(gitdir: str, abuse: Abuse) -> list[dict]:
    commit = git_head(gitdir)
    rows = list(csv.DictReader(io.StringIO(git_show(gitdir, "dataset/annotated_comment_level.csv"))))
    by_issue: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_issue[r["issue_id"]].append(r)
    rng = random.Random(f"{SEED}-inc-within")
    pool = []
    for issue in sorted(by_issue, key=int):
        cs = sorted(by_issue[issue], key=lambda r: int(r["id"]))
        cands = []
        for a, b in zip(cs, cs[1:], strict=False):
            if a["tbdf"].strip().lower() in ("", "none"):
                continue
            reply = reply_text(b["comment_body"])
            if len(reply.split()) >= 3:
                cands.append((a, b, reply))
        if cands:
            pool.append(rng.choice(cands))
    out = []
    for n, (a, b, reply) in enumerate(draw("inc", pool, TARGET["inc"]), 1):
        upset = cut(clean(re.sub(r"(?m)^>.*$", "", a["comment_body"])), max_chars=700)
        abusive = a["tbdf"].strip().lower() in UNCIVIL_KEEP_ABUSIVE or abuse(a["comment_body"])
        out.append(
            example(
                "inc",
                n,
                [{"role": "patient", "content": upset}],
                reply,
                abusive,
                f"issue_id={a['issue_id']} uncivil comment_id={a['comment_id']} (tbdf {a['tbdf']}) "
                f"-> reply comment_id={b['comment_id']}",
                commit,
                note="the next comment in the thread; the data set does not say who wrote it",
            )
        )
    return out


def reply_text(body: str) -> str:
    body = re.sub(r"(?m)^\s*>.*$", "", body)  # quoted lines repeat the other person
    text = clean(body)
    if len(text) > 600:
        text = cut(text, max_sentences=4)
    return text


CC_NOTE = "therapist's answer cut to its first 3 sentences"


def counsel(gitdir: str, abuse: Abuse) -> list[dict]:
    commit = git_head(gitdir)
    rows = list(csv.DictReader(io.StringIO(git_show(gitdir, "data/20200325_counsel_chat.csv"))))
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["topic"] in DISTRESS_TOPICS and len(r["answerText"].split()) >= 5:
            by_q[r["questionID"]].append(r)
    rng = random.Random(f"{SEED}-cc-within")
    pool = []
    for q in sorted(by_q, key=int):
        answers = sorted(by_q[q], key=lambda r: int(r[""]))
        # the same answer can be listed under two topics: keep distinct texts
        seen, uniq = set(), []
        for r in answers:
            if r["answerText"] not in seen:
                seen.add(r["answerText"])
                uniq.append(r)
        pool.append(rng.choice(uniq))
    out = []
    for n, r in enumerate(draw("cc", pool, TARGET["cc"]), 1):
        title = clean(r["questionTitle"])
        body = clean(r["questionText"])
        upset = body if body.lower().startswith(title.lower()[:40]) else f"{title}\n{body}"
        upset = cut(upset, max_chars=700)
        answer = cut(clean(r["answerText"]), max_sentences=3)
        # patient_abusive stays false: a person asking a therapist about their own life is not abusing
        # the therapist (the rubric's word list fires on "I feel stupid", "a stupid question").
        out.append(
            example(
                "cc",
                n,
                [{"role": "patient", "content": upset}],
                answer,
                False,
                f"row {r['']} questionID={r['questionID']} topic={r['topic']}",
                commit,
                note=CC_NOTE if answer.endswith("[...]") else None,
            )
        )
    return out


def persuasion(gitdir: str, abuse: Abuse) -> list[dict]:
    commit = git_head(gitdir)
    rows = list(csv.DictReader(io.StringIO(git_show(gitdir, "data/FullData/full_dialog.csv"))))
    dialogs: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        dialogs[r["B2"]].append(r)
    rng = random.Random(f"{SEED}-p4g-within")
    pool = []
    for d in sorted(dialogs):
        turns: list[list] = []  # [(turn, role), [units]]
        for r in sorted(dialogs[d], key=lambda r: int(r[""])):
            key = (int(r["Turn"]), r["B4"])
            if turns and turns[-1][0] == key:
                turns[-1][1].append(r["Unit"].strip())
            else:
                turns.append([key, [r["Unit"].strip()]])
        cands = [
            i
            for i in range(len(turns) - 1)
            if turns[i][0][1] == "1" and turns[i + 1][0][1] == "0" and PUSHBACK_RE.search(" ".join(turns[i][1]))
        ]
        if cands:
            pool.append((d, rng.choice(cands), turns))
    out = []
    for n, (d, i, turns) in enumerate(draw("p4g", pool, TARGET["p4g"]), 1):
        hist = []
        if i > 0 and turns[i - 1][0][1] == "0":
            hist.append({"role": "trainee", "content": cut(clean(" ".join(turns[i - 1][1])), max_chars=700)})
        hist.append({"role": "patient", "content": cut(clean(" ".join(turns[i][1])), max_chars=700)})
        reply = clean(" ".join(turns[i + 1][1]))
        out.append(
            example(
                "p4g",
                n,
                hist,
                reply,
                abuse(" ".join(turns[i][1])),
                f"dialogue B2={d} persuadee turn {turns[i][0][0]} -> persuader turn {turns[i + 1][0][0]}",
                commit,
            )
        )
    return out


def split(examples: list[dict]) -> None:
    by_src: dict[str, list[dict]] = defaultdict(list)
    for e in examples:
        by_src[e["id"].split("-")[1]].append(e)
    for src, es in by_src.items():
        ids = sorted(e["id"] for e in es)
        random.Random(f"{SEED}-split-{src}").shuffle(ids)
        train = set(ids[: round(TRAIN_SHARE * len(ids))])
        for e in es:
            e["split"] = "train" if e["id"] in train else "heldout"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Reads the source repositories with git (no network).",
        epilog="Example: python tests/data/gold/human/collect.py "
        "--twitter /work/.mirror/IBM+twitter-customer-care-document-prediction/repo "
        "--incivility /work/.mirror/vcu-swim-lab+incivility-dataset/repo "
        "--counsel /work/.mirror/nbertagnolli+counsel-chat/repo "
        "--p4g /work/.mirror/ohyj1002+persuasionforgood/repo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--twitter", required=True, help="git dir of IBM/twitter-customer-care-document-prediction")
    ap.add_argument("--incivility", required=True, help="git dir of vcu-swim-lab/incivility-dataset")
    ap.add_argument("--counsel", required=True, help="git dir of nbertagnolli/counsel-chat")
    ap.add_argument("--p4g", required=True, help="git dir of ohyj1002/persuasionforgood")
    ap.add_argument(
        "--rubric",
        default=str(REPO_ROOT / "rubrics" / "deescalation.yaml"),
        help="rubric whose patient_abusive patterns set context.patient_abusive (default: %(default)s)",
    )
    ap.add_argument("--out", default=str(HERE / "pool.jsonl"), help="output file (default: %(default)s)")
    args = ap.parse_args(argv)

    abuse = Abuse(Path(args.rubric))
    examples = (
        twitter(args.twitter, abuse)
        + incivility(args.incivility, abuse)
        + counsel(args.counsel, abuse)
        + persuasion(args.p4g, abuse)
    )
    split(examples)
    examples.sort(key=lambda e: e["id"])
    with open(args.out, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for e in examples:
        counts[(e["id"].split("-")[1], e["split"])] += 1
    for src in TARGET:
        print(f"{src}: train {counts[(src, 'train')]}, heldout {counts[(src, 'heldout')]}")
    print(f"wrote {len(examples)} lines to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
