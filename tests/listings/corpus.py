"""A deterministic generator of realistic second-hand listings (闲鱼-style titles: brand, model, spec, 成色 words),
for the relevance tests and the search benchmark. Same seed, same corpus: nothing big is committed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from services.listings.search.port import ListingDoc

CITIES = [
    "110105",
    "110108",
    "310101",
    "310115",
    "440106",
    "440305",
    "330106",
    "320106",
    "510107",
    "420106",
    "610113",
    "500103",
]
CONDITION_WORDS = [
    "九成新",
    "九五新",
    "95新",
    "99新",
    "八成新",
    "全新未拆封",
    "几乎全新",
    "自用",
    "无拆无修",
    "功能正常",
    "轻微使用痕迹",
    "成色好",
    "急出",
    "低价转让",
    "个人闲置",
]
SELL_WORDS = ["包邮", "同城自提", "可小刀", "不议价", "搬家急出", "可面交", "支持验货", "顺丰到付"]
CONDITION_OF = {
    "全新未拆封": "new",
    "99新": "like_new",
    "几乎全新": "like_new",
    "九五新": "like_new",
    "95新": "like_new",
    "九成新": "good",
    "成色好": "good",
    "八成新": "fair",
    "轻微使用痕迹": "good",
}

PHONES = {
    "华为": ["Mate 40 Pro", "Mate 50", "Mate 60 Pro", "P30", "P40", "P50 Pro", "nova 9", "nova 11"],
    "苹果": ["iPhone 11", "iPhone 12", "iPhone 13", "iPhone 13 Pro Max", "iPhone 14", "iPhone 15 Pro"],
    "小米": ["小米 12", "小米 13 Ultra", "小米 14", "Redmi K60", "Redmi Note 12"],
    "OPPO": ["Find X6", "Reno 10", "Reno 8 Pro"],
    "vivo": ["X90", "X100 Pro", "S17", "iQOO 11"],
    "荣耀": ["Magic 5 Pro", "荣耀 90", "X50"],
    "三星": ["Galaxy S23", "Galaxy Z Flip 5", "Galaxy Note 20"],
    "一加": ["一加 11", "Ace 2"],
}
STORAGE = ["64G", "128G", "256G", "512G", "8+128G", "8+256G", "12+256G", "12+512G"]
COLORS = ["黑色", "白色", "曜石黑", "星光色", "远峰蓝", "雅川青", "冰霜银", "紫色"]
COMPUTERS = [
    ("联想", "ThinkPad X1 Carbon"),
    ("联想", "小新 Pro 14"),
    ("苹果", "MacBook Air M1"),
    ("苹果", "MacBook Pro 14寸 M2"),
    ("戴尔", "XPS 13"),
    ("华硕", "天选 4"),
    ("惠普", "战66"),
    ("华为", "MateBook 14"),
    ("小米", "Redmi Book 15"),
    ("机械革命", "蛟龙 16"),
]
COMPUTER_SPECS = ["i5 16G 512G", "i7 16G 1T", "R7 32G 1T", "M1 8G 256G", "RTX 3060", "RTX 4060", "i5 8G 256G"]
TABLETS = [
    ("苹果", "iPad Air 5"),
    ("苹果", "iPad Pro 11寸"),
    ("苹果", "iPad mini 6"),
    ("华为", "MatePad 11"),
    ("小米", "小米平板 6"),
    ("联想", "小新Pad Pro"),
]
WEARABLES = [
    ("苹果", "Apple Watch S8"),
    ("华为", "Watch GT 4"),
    ("小米", "手环 8"),
    ("佳明", "Forerunner 255"),
]
APPLIANCES = [
    ("appliance.small", ["石头", "科沃斯", "追觅", "小米"], ["扫地机器人", "扫拖一体机器人"]),
    ("appliance.small", ["戴森", "松下", "飞利浦"], ["吹风机", "电动牙刷", "剃须刀"]),
    ("appliance.small", ["小米", "352", "飞利浦"], ["空气净化器"]),
    ("appliance.small", ["美的", "格兰仕", "松下"], ["微波炉", "电饭煲", "空气炸锅"]),
    ("appliance.fridge", ["海尔", "美的", "西门子", "容声"], ["双开门冰箱", "三门冰箱", "小冰箱"]),
    ("appliance.washer", ["小天鹅", "海尔", "西门子"], ["滚筒洗衣机", "波轮洗衣机", "洗烘一体机"]),
    ("appliance.tv", ["索尼", "TCL", "海信", "小米"], ["55寸 4K电视", "65寸 智能电视", "43寸 液晶电视"]),
    ("appliance.ac", ["格力", "美的", "大金"], ["1.5匹 挂机空调", "3匹 柜机空调"]),
]
BOOKS = [
    "《三体》全集",
    "《活着》",
    "《百年孤独》",
    "《人类简史》",
    "《红楼梦》",
    "《围城》",
    "《解忧杂货店》",
    "考研英语 真题",
    "高等数学 同济第七版",
    "法考 教材 全套",
    "公务员考试 行测",
    "Python编程 从入门到实践",
    "算法导论",
    "小学 语文 课本",
    "哈利波特 英文原版",
]
FURNITURE = [
    "宜家 书桌",
    "实木 衣柜",
    "布艺 沙发",
    "乳胶 床垫",
    "人体工学椅",
    "折叠 餐桌",
    "榻榻米 床",
    "书架 置物架",
]
BIKES = ["捷安特 山地自行车", "美利达 公路车", "迪卡侬 折叠自行车", "永久 自行车", "小牛 电动车"]
BABY = ["好孩子 婴儿推车", "安全座椅 宝得适", "婴儿床 实木", "儿童 滑板车", "贝亲 奶瓶 全套"]
CLOTHES = ["耐克 AJ1 球鞋", "阿迪达斯 跑鞋", "优衣库 羽绒服", "北面 冲锋衣", "李宁 篮球鞋", "始祖鸟 软壳"]
AUDIO = [
    ("索尼", "WH-1000XM4 降噪耳机"),
    ("苹果", "AirPods Pro 2"),
    ("漫步者", "蓝牙音箱"),
    ("Bose", "QC45 耳机"),
]
CAMERAS = [
    ("佳能", "EOS R6 微单相机"),
    ("索尼", "A7M3 全画幅相机"),
    ("富士", "X-T4 相机"),
    ("尼康", "Z6 相机"),
]
CONSOLES = [("索尼", "PS5 光驱版 游戏机"), ("任天堂", "Switch OLED 游戏机"), ("微软", "Xbox Series X 游戏机")]
ACCESSORY_DESC = ["适配华为手机", "苹果手机可用", "小米手机通用", "iPhone 13 可用", "华为 Mate 40 Pro 适用"]

# planted listings: one each, the answer to a query of the relevance set (listing id → title)
PLANTED = {
    "planted-leica": ("徕卡 M6 胶片相机 银色", "electronics.camera"),
    "planted-hasselblad": ("哈苏 500CM 中画幅 胶片机", "electronics.camera"),
    "planted-steinway": ("施坦威 立式钢琴 K-132", "sports.general"),
    "planted-brompton": ("Brompton 小布 折叠车 六速", "vehicles.bicycle"),
    "planted-dunhuang": ("《敦煌遗书》影印本 全二十册", "books.general"),
    "planted-rimowa": ("日默瓦 RIMOWA 铝镁合金 登机箱", "textile.clothes"),
    "planted-vitamix": ("维他密斯 Vitamix 破壁机 E320", "appliance.small"),
    "planted-herman": ("赫曼米勒 Aeron 人体工学椅 B号", "bulky.furniture"),
}


def _listing(rnd: random.Random) -> tuple[str, str, str]:
    """(title, description, category) of one generated listing."""
    cw = rnd.choice(CONDITION_WORDS)
    kind = rnd.random()
    if kind < 0.30:
        brand = rnd.choice(list(PHONES))
        model = rnd.choice(PHONES[brand])
        name = model if model.startswith(brand) else f"{brand} {model}"
        title = f"{name} {rnd.choice(STORAGE)} {rnd.choice(COLORS)} {cw}"
        if rnd.random() < 0.6:
            title = (
                title.replace(f" {rnd.choice(STORAGE)}", "", 1) + " 手机"
                if rnd.random() < 0.5
                else f"{name} 手机 {rnd.choice(STORAGE)} {cw}"
            )
        desc = f"{rnd.choice(SELL_WORDS)}，电池健康 {rnd.randint(78, 100)}%，{rnd.choice(['国行', '港版', '全网通'])}"
        return title, desc, "electronics.phone"
    if kind < 0.38:
        brand, model = rnd.choice(COMPUTERS)
        return (
            f"{brand} {model} {rnd.choice(COMPUTER_SPECS)} 笔记本电脑 {cw}",
            f"{rnd.choice(SELL_WORDS)}，屏幕无坏点，续航{rnd.randint(3, 12)}小时",
            "electronics.computer",
        )
    if kind < 0.43:
        brand, model = rnd.choice(TABLETS)
        return (
            f"{brand} {model} 平板电脑 {rnd.choice(['64G', '128G', '256G'])} {cw}",
            f"{rnd.choice(SELL_WORDS)}，带原装充电器",
            "electronics.tablet",
        )
    if kind < 0.46:
        brand, model = rnd.choice(WEARABLES)
        return f"{brand} {model} 智能手表 {cw}", f"{rnd.choice(SELL_WORDS)}", "electronics.wearable"
    if kind < 0.62:
        cat, brands, things = rnd.choice(APPLIANCES)
        return (
            f"{rnd.choice(brands)} {rnd.choice(things)} {cw}",
            f"{rnd.choice(SELL_WORDS)}，用了{rnd.randint(1, 5)}年，功能完好",
            cat,
        )
    if kind < 0.72:
        return (
            f"{rnd.choice(BOOKS)} {rnd.choice(['正版', '二手书', '有笔记', '无笔记'])} {cw}",
            f"图书 {rnd.choice(SELL_WORDS)}",
            "books.general",
        )
    if kind < 0.78:
        return f"{rnd.choice(FURNITURE)} {cw}", f"{rnd.choice(SELL_WORDS)}，需自提", "bulky.furniture"
    if kind < 0.82:
        return f"{rnd.choice(BIKES)} {cw}", f"{rnd.choice(SELL_WORDS)}", "vehicles.bicycle"
    if kind < 0.86:
        return f"{rnd.choice(BABY)} {cw}", f"{rnd.choice(SELL_WORDS)}，宝宝长大了用不上", "baby.general"
    if kind < 0.91:
        return (
            f"{rnd.choice(CLOTHES)} {rnd.randint(36, 45)}码 {cw}",
            f"{rnd.choice(SELL_WORDS)}，正品保证",
            "textile.clothes",
        )
    if kind < 0.94:
        brand, model = rnd.choice(AUDIO)
        return f"{brand} {model} {cw}", f"{rnd.choice(SELL_WORDS)}", "electronics.audio"
    if kind < 0.96:
        brand, model = rnd.choice(CAMERAS)
        return f"{brand} {model} 单机身 {cw}", f"快门{rnd.randint(1, 30)}千次", "electronics.camera"
    if kind < 0.98:
        brand, model = rnd.choice(CONSOLES)
        return f"{brand} {model} {cw}", f"{rnd.choice(SELL_WORDS)}，送两个手柄", "electronics.console"
    # accessories that name phones only in their description: distractors for phone queries
    return (
        f"{rnd.choice(['钢化膜', '保护壳', '快充充电器', '数据线', '车载支架'])} {cw}",
        rnd.choice(ACCESSORY_DESC),
        "electronics.audio",
    )


def generate(n: int, seed: int = 20261204, with_planted: bool = True) -> Iterator[ListingDoc]:
    rnd = random.Random(seed)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(n):
        title, desc, category = _listing(rnd)
        cond = next(
            (c for w, c in CONDITION_OF.items() if w in title), rnd.choice(["good", "fair", "like_new"])
        )
        yield ListingDoc(
            listing_id=f"g{i:06d}",
            version=1,
            seller_id=f"s{rnd.randint(1, n // 5 + 1)}",
            title=title,
            description=desc,
            category=category,
            condition=cond,
            price_fen=rnd.randint(10, 20000) * 100,
            city_code=rnd.choice(CITIES),
            published_at=t0 + timedelta(seconds=i * 37),
        )
    if with_planted:
        for j, (lid, (title, category)) in enumerate(PLANTED.items()):
            yield ListingDoc(
                listing_id=lid,
                version=1,
                seller_id="s_planted",
                title=title,
                description="个人收藏",
                category=category,
                condition="good",
                price_fen=880000,
                city_code="310101",
                published_at=t0 + timedelta(days=30, minutes=j),
            )
