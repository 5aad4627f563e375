"""A small ministry corpus and labelled questions for the retrieval-quality test (generated, no blobs).

Four documents in the four formats staff upload most, several sections each:

* ``旅費規程.pdf`` — a text PDF, four pages (articles under chapter headings);
* ``情報セキュリティ対策基準.docx`` — Word headings and paragraphs (no pages);
* ``文書管理規則.pdf`` — a *scanned* PDF: two pages that are pictures of text, read by OCR;
* ``予算執行状況.xlsx`` — four sheets (a sheet is a page for citations).

Each :class:`Question` is phrased the way staff ask (paraphrased, not copied:
see ``test_questions_are_labelled_and_paraphrased``) and labelled with the
document, the page the answer is on (0 for DOCX, which has no pages) and a
phrase of the answer that the answer-bearing chunk must contain.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from .samples import NOTO_CJK, pdf_bytes

TRAVEL = "旅費規程.pdf"
SECURITY = "情報セキュリティ対策基準.docx"
RECORDS = "文書管理規則.pdf"
BUDGET = "予算執行状況.xlsx"

# Text PDF: one string per page (fpdf2 wraps long lines, as real PDFs do).
TRAVEL_PAGES = [
    "職員旅費規程\n"
    "第一章 総則\n"
    "第一条（目的）\n"
    "この規程は、職員が公務のため旅行する場合に支給する旅費に関し、必要な事項を定めることを目的とする。\n"
    "第二条（旅行命令）\n"
    "旅行は、所属長が発する旅行命令に基づいて行う。旅行命令は、原則として出発の三日前までに旅行命令簿に"
    "記載して行うものとする。\n"
    "第三条（旅行命令の変更）\n"
    "旅行者は、天災その他やむを得ない事情により命令どおり旅行できない場合には、速やかに所属長に申し出て、"
    "旅行命令の変更を受けなければならない。",
    "第二章 旅費の種類及び計算\n"
    "第四条（旅費の種類）\n"
    "旅費の種類は、鉄道賃、船賃、航空賃、車賃、日当、宿泊料及び移転料とする。\n"
    "第五条（鉄道賃）\n"
    "鉄道賃は、旅行区間の路程に応じた普通旅客運賃とする。片道百キロメートル以上の区間で特別急行列車を"
    "運行する線路による場合は、特別急行料金を加算する。\n"
    "第六条（航空賃）\n"
    "航空機を利用する旅行については、現に支払った旅客運賃を支給する。航空機の利用は、鉄道を利用するより"
    "経済的又は時間的に合理的な場合に限る。旅行者は、搭乗券の半券又は搭乗証明書を提出しなければならない。",
    "第七条（日当）\n"
    "日当は、一日当たり二千二百円とする。ただし、旅行先が在勤地から片道五十キロメートル未満の場合は、"
    "その半額とする。\n"
    "第八条（宿泊料）\n"
    "宿泊料は、一夜当たり一万九百円を上限とする。東京都特別区その他の指定都市に宿泊する場合は、"
    "一万三千百円を上限とする。\n"
    "第九条（車賃）\n"
    "車賃は、一キロメートル当たり三十七円とする。公共交通機関のない地域への旅行に限り、"
    "自家用車の使用を認める。",
    "第三章 精算\n"
    "第十条（概算払）\n"
    "旅行者は、旅行前に旅費の概算払を受けることができる。\n"
    "第十一条（精算）\n"
    "旅行者は、旅行を終えた日から十五日以内に、旅費精算請求書に領収書等を添えて提出し、精算しなければならない。\n"
    "第十二条（返納）\n"
    "概算払を受けた旅費に過払いがあるときは、精算の日から十日以内に過払金を返納しなければならない。\n"
    "附則\n"
    "この規程は、令和六年四月一日から施行する。",
]

# Word: (heading, paragraphs) per section.
SECURITY_SECTIONS = [
    (
        "1 目的及び適用範囲",
        [
            "この基準は、情報セキュリティポリシーに基づき、職員が遵守すべき具体的な対策を定める。"
            "本府省の全職員及び業務委託先の作業者に適用する。"
        ],
    ),
    (
        "2 パスワードの管理",
        [
            "パスワードは12文字以上とし、英大文字、英小文字、数字及び記号を組み合わせなければならない。",
            "他のシステムと同じパスワードを使い回してはならない。業務システムへのログインには多要素認証を用いる。",
        ],
    ),
    (
        "3 端末の庁外持出し",
        [
            "職員が端末を庁舎外へ持ち出す場合は、事前に情報セキュリティ責任者の許可を得るとともに、"
            "ディスク全体を暗号化していなければならない。",
        ],
    ),
    (
        "4 外部記録媒体の利用",
        [
            "USBメモリ等の外部記録媒体は、原則として使用を禁止する。業務上やむを得ず使用する場合は、"
            "管理番号を付した媒体に限り、使用の都度、媒体管理簿に記録する。",
        ],
    ),
    (
        "5 電子メールの利用",
        [
            "機密性2以上の情報を庁外へ電子メールで送信するときは、添付ファイルを暗号化し、"
            "復号のためのパスワードは別の経路で相手方に通知する。",
        ],
    ),
    (
        "6 インシデントへの対応",
        [
            "情報漏えいその他の情報セキュリティインシデント又はそのおそれを認知した職員は、"
            "直ちにCSIRTに報告する。報告は、認知から一時間以内に行わなければならない。",
        ],
    ),
    (
        "7 クラウドサービスの利用",
        [
            "要機密情報を取り扱うクラウドサービスは、ISMAPクラウドサービスリストに登録されたサービスから"
            "選定することを原則とする。",
        ],
    ),
    (
        "8 教育及び訓練",
        [
            "全職員は、年一回、情報セキュリティ研修を受講しなければならない。"
            "標的型攻撃メールへの対処訓練は、年二回実施する。",
        ],
    ),
    (
        "9 テレワーク",
        [
            "テレワークでは、私物端末の使用は禁止とし、貸与端末からVPNを経由して庁内システムに接続する。"
            "公衆無線LANを利用する場合は、のぞき見防止フィルタを装着する。",
        ],
    ),
    (
        "10 ソフトウェアの導入",
        [
            "許可リストに掲載されていないソフトウェアを端末に導入するときは、システム管理者の承認を得なければならない。",
        ],
    ),
    (
        "11 ログの取得及び保存",
        ["情報システムのアクセスログは、一年以上保存し、不正なアクセスの有無を定期的に確認する。"],
    ),
]

# Scanned PDF: lines drawn on each page image (short lines: a scan has no reflow).
RECORDS_PAGES = [
    [
        "行政文書管理規則",
        "第一条（目的）",
        "この規則は、行政文書の作成、整理、保存",
        "及び廃棄に関し必要な事項を定める。",
        "第二条（文書管理者）",
        "各課の課長を文書管理者とし、課内の",
        "行政文書を適正に管理させる。",
        "第三条（保存期間）",
        "法令の制定又は改廃に関する文書の保存",
        "期間は三十年とする。",
        "予算及び決算に関する文書の保存期間は",
        "十年とする。",
    ],
    [
        "第四条（電子文書の保存）",
        "電子文書は、共有フォルダではなく",
        "文書管理システムに登録して保存する。",
        "第五条（廃棄）",
        "保存期間が満了した文書を廃棄するときは、",
        "あらかじめ内閣総理大臣の同意を得なければ",
        "ならない。",
        "第六条（点検）",
        "文書管理者は、毎年度一回、管理状況を",
        "点検し、その結果を総括文書管理者に",
        "報告する。",
    ],
]

# Spreadsheet: sheet title → rows.
BUDGET_SHEETS: list[tuple[str, list[list[object]]]] = [
    (
        "予算執行状況",
        [
            ["令和6年度 予算執行状況（12月末現在、単位：千円）"],
            ["費目", "予算額", "執行済額", "執行率"],
            ["旅費", 12000, 8450, "70.4%"],
            ["庁費", 35000, 21300, "60.9%"],
            ["委託費", 120000, 54000, "45.0%"],
            ["備品購入費", 8000, 7600, "95.0%"],
            ["謝金", 3000, 900, "30.0%"],
            ["通信運搬費", 6500, 4800, "73.8%"],
        ],
    ),
    (
        "契約一覧",
        [
            ["契約件名", "契約相手方", "契約金額（円）", "契約方式"],
            ["庁内ネットワーク保守業務", "株式会社霞ネットサービス", 18480000, "一般競争入札"],
            ["文書管理システム改修業務", "日本行政システム株式会社", 9900000, "随意契約（少額）"],
            ["職員研修会場借上げ", "一般財団法人霞が関会館", 660000, "随意契約"],
            ["白書英訳業務", "株式会社グローバル翻訳", 2750000, "企画競争"],
        ],
    ),
    (
        "予算流用",
        [
            ["決裁日", "流用元", "流用先", "金額（千円）", "理由"],
            ["令和6年10月8日", "謝金", "旅費", 500, "災害対応のため現地調査の出張が増加したため"],
            ["令和6年11月20日", "庁費", "通信運搬費", 800, "郵送料の値上げに対応するため"],
        ],
    ),
    (
        "留意事項",
        [
            ["年度末の支出負担行為は、令和7年3月14日までに会計課へ回付すること。"],
            ["予算の流用を行うときは、事前に会計課長の承認を得ること。"],
            ["執行率が50%を下回る費目は、四半期ごとに執行が遅れている理由を報告すること。"],
        ],
    ),
]


@dataclass(frozen=True)
class Question:
    """A question staff might ask, with where its answer is."""

    text: str
    filename: str
    page: int  # page (PDF) or sheet number (XLSX); 0 for DOCX
    phrase: str  # part of the answer; the answer-bearing chunk contains it


QUESTIONS = [
    # 旅費規程.pdf
    Question("出張の命令は誰が出すのですか", TRAVEL, 1, "所属長が発する旅行命令"),
    Question("旅行命令は出発の何日前までに出しておく必要がありますか", TRAVEL, 1, "出発の三日前まで"),
    Question("台風で予定どおりに出張できなくなったらどうすればいいですか", TRAVEL, 1, "旅行命令の変更"),
    Question("旅費にはどんな種類がありますか", TRAVEL, 2, "鉄道賃、船賃、航空賃"),
    Question("新幹線を使ったときに特急料金は支給されますか", TRAVEL, 2, "特別急行料金を加算する"),
    Question("飛行機で出張した場合に提出しなければならない書類は何ですか", TRAVEL, 2, "搭乗券の半券"),
    Question("日当は一日いくらもらえますか", TRAVEL, 3, "二千二百円"),
    Question("東京に泊まるときのホテル代の上限額を教えてください", TRAVEL, 3, "一万三千百円"),
    Question("マイカーで出張に行ってもよいのでしょうか", TRAVEL, 3, "自家用車の使用を認める"),
    Question("出張から戻ったら何日以内に旅費を精算する必要がありますか", TRAVEL, 4, "十五日以内"),
    Question("前払いで受け取った旅費が多すぎたときはどうなりますか", TRAVEL, 4, "過払金を返納"),
    Question("この旅費の規程はいつから適用されていますか", TRAVEL, 4, "令和六年四月一日から施行"),
    # 情報セキュリティ対策基準.docx
    Question("パスワードは最低何文字にしなければいけませんか", SECURITY, 0, "12文字以上"),
    Question("ノートパソコンを庁舎の外に持ち出すための条件は", SECURITY, 0, "ディスク全体を暗号化"),
    Question("仕事でUSBメモリを使うことはできますか", SECURITY, 0, "管理番号を付した媒体"),
    Question(
        "機密情報をメールで外部に送るときに気をつけることは何ですか", SECURITY, 0, "別の経路で相手方に通知"
    ),
    Question(
        "情報漏えいに気づいたら、いつまでにどこへ連絡すればよいですか", SECURITY, 0, "直ちにCSIRTに報告"
    ),
    Question("どのクラウドサービスなら業務に使えますか", SECURITY, 0, "ISMAPクラウドサービスリスト"),
    Question("セキュリティ研修は年に何回受けなければなりませんか", SECURITY, 0, "年一回"),
    Question("在宅勤務で自分のパソコンを使ってもかまいませんか", SECURITY, 0, "私物端末の使用は禁止"),
    Question(
        "新しいソフトをインストールしたいときの手続きを教えてください", SECURITY, 0, "システム管理者の承認"
    ),
    Question("アクセスログはどれくらいの期間残しておくのですか", SECURITY, 0, "一年以上保存"),
    # 文書管理規則.pdf (scanned)
    Question("文書管理者には誰がなるのですか", RECORDS, 1, "課長を文書管理者"),
    Question("予算や決算の書類は何年保存しなければなりませんか", RECORDS, 1, "決算に関する文書"),
    Question("法律の改正に関係する文書はどのくらい保管しますか", RECORDS, 1, "三十年とする"),
    Question("電子ファイルの文書はどこに保存すればよいですか", RECORDS, 2, "文書管理システムに登録"),
    Question("保存期間が過ぎた文書を捨てるには何が必要ですか", RECORDS, 2, "内閣総理大臣の同意"),
    Question("文書の管理状況のチェックはどのくらいの頻度で行いますか", RECORDS, 2, "毎年度一回"),
    # 予算執行状況.xlsx
    Question("旅費の予算はどれくらい使われていますか", BUDGET, 1, "旅費 | 12000 | 8450"),
    Question("委託費の執行率は何パーセントですか", BUDGET, 1, "委託費 | 120000 | 54000 | 45.0%"),
    Question("ネットワークの保守はどの会社に発注していますか", BUDGET, 2, "株式会社霞ネットサービス"),
    Question("白書の翻訳はどういう方式で契約しましたか", BUDGET, 2, "白書英訳業務"),
    Question("謝金から旅費へ予算を回したのはなぜですか", BUDGET, 3, "現地調査の出張が増加"),
    Question("年度末の支払い手続きは何日までに済ませればよいですか", BUDGET, 4, "3月14日"),
    Question("予算を別の費目に回すには誰の了承が必要ですか", BUDGET, 4, "会計課長の承認"),
    Question("執行が進んでいない費目についてはどうすればよいですか", BUDGET, 4, "四半期ごと"),
]


def page_texts(filename: str) -> list[str]:
    """The source text of each page of ``filename`` (one entry for DOCX), for label checks."""
    if filename == TRAVEL:
        return list(TRAVEL_PAGES)
    if filename == RECORDS:
        return ["".join(lines) for lines in RECORDS_PAGES]
    if filename == BUDGET:
        return [
            title + "\n" + "\n".join(" | ".join(str(cell) for cell in row) for row in rows)
            for title, rows in BUDGET_SHEETS
        ]
    return ["\n".join(f"{heading}\n" + "\n".join(body) for heading, body in SECURITY_SECTIONS)]


def travel_pdf() -> bytes:
    return pdf_bytes(TRAVEL_PAGES)


def security_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("情報セキュリティ対策基準", level=0)
    for heading, paragraphs in SECURITY_SECTIONS:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def records_scanned_pdf() -> bytes:
    """Pages that are only pictures of text (no text layer), so the pipeline must OCR them."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(NOTO_CJK), 44)
    pdf = FPDF()
    for lines in RECORDS_PAGES:
        image = Image.new("L", (1500, 100 + 80 * len(lines)), 255)
        draw = ImageDraw.Draw(image)
        for i, line in enumerate(lines):
            draw.text((50, 50 + 80 * i), line, font=font, fill=0)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pdf.add_page()
        pdf.image(io.BytesIO(buffer.getvalue()), x=15, y=15, w=170)
    return bytes(pdf.output())


def budget_xlsx() -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in BUDGET_SHEETS:
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def corpus_files() -> list[tuple[str, bytes]]:
    """(filename, bytes) of the four documents, in upload order."""
    return [
        (TRAVEL, travel_pdf()),
        (SECURITY, security_docx()),
        (RECORDS, records_scanned_pdf()),
        (BUDGET, budget_xlsx()),
    ]
