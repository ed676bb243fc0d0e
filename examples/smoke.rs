use evetcd::*;
fn main() {
    let ep = std::env::args().nth(1).unwrap_or("127.0.0.1:2379".into());
    let client = Client::new(Config::new().endpoints([ep])).unwrap();
    let c = client.clone();
    client.put("smoke", "hello", PutOptions::new(), move |r| {
        println!("put: {:?}", r.map(|p| p.header.unwrap().revision));
        c.get("smoke", GetOptions::new(), |r| {
            println!("get: {:?}", r.map(|g| g.kvs))
        });
    });
    client.get("", GetOptions::new(), |r| println!("empty key: {r:?}"));
    client.run();
}
