"""The trading service: B2B scrap lots (再生资源交易) between verified recycling firms — auctions, awards,
weighbridge delivery and settlement, chain of custody."""
