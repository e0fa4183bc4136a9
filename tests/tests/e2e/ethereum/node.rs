//! A stand-in Ethereum node for the end-to-end tests: revm (the EVM inside reth and foundry) over
//! an in-memory state, behind the JSON-RPC methods an alloy provider calls to fill, send and
//! check a transaction, served as HTTP/1.1 on a loopback port. Each raw transaction's sender is
//! recovered here from its signature, and the transaction is executed: a bad signature, a wrong
//! chain id or nonce, or too little balance is refused as a real node refuses it.
//!
//! A stand-in, not a node: no blocks are sealed (the block number is the count of transactions
//! executed), there are no receipts, logs or mempool, and requests are answered one at a time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use alloy_consensus::transaction::SignerRecoverable as _;
use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718 as _, Typed2718 as _};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_rpc_types_eth::{FeeHistory, TransactionRequest};
use revm::context::TxEnv;
use revm::database::{CacheDB, EmptyDB};
use revm::state::AccountInfo;
use revm::{
    Context, DatabaseRef as _, ExecuteCommitEvm as _, ExecuteEvm as _, MainBuilder as _,
    MainContext as _,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The base fee of every block, in wei.
pub(super) const BASE_FEE: u64 = 1_000_000_000;
const BLOCK_GAS_LIMIT: u64 = 30_000_000;
/// EIP-7825's cap on one transaction's gas.
const TX_GAS_CAP: u64 = 1 << 24;
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
const IDLE: Duration = Duration::from_secs(30);

struct Chain {
    chain_id: u64,
    db: CacheDB<EmptyDB>,
    executed: u64,
    senders: Vec<Address>,
}

/// A running stand-in node.
pub(super) struct Node {
    /// `http://127.0.0.1:<port>`.
    pub(super) url: String,
    chain: Arc<Mutex<Chain>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Node {
    /// Starts a chain `chain_id` whose genesis gives each address its balance.
    pub(super) async fn start(chain_id: u64, genesis: &[(Address, U256)]) -> Node {
        let mut db = CacheDB::<EmptyDB>::default();
        for (address, balance) in genesis {
            db.insert_account_info(*address, AccountInfo::from_balance(*balance));
        }
        let chain = Arc::new(Mutex::new(Chain {
            chain_id,
            db,
            executed: 0,
            senders: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = chain.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, served.clone()));
            }
        });
        Node { url, chain, task }
    }

    /// The senders recovered from every transaction executed, in order.
    pub(super) fn senders(&self) -> Vec<Address> {
        self.lock().senders.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection: HTTP/1.1 requests with a body, answered in order, bounded in size and time.
async fn serve(stream: TcpStream, chain: Arc<Mutex<Chain>>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let Ok(Ok(Some(body))) = tokio::time::timeout(IDLE, request(&mut read)).await else {
            return;
        };
        let answer = answer(&body, &chain).to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if write.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request's body; `None` at the end of the connection.
async fn request(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = None;
    let mut head = 0;
    loop {
        let mut line = String::new();
        let n = read.read_line(&mut line).await?;
        head += n;
        if n == 0 {
            return Ok(None);
        }
        if head > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length
        .filter(|&l| l <= MAX_BODY)
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut body = vec![0; length];
    read.read_exact(&mut body).await?;
    Ok(Some(body))
}

fn answer(body: &[u8], chain: &Mutex<Chain>) -> Value {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}});
    };
    let id = request["id"].clone();
    let method = request["method"].as_str().unwrap_or_default();
    let mut chain = chain.lock().unwrap_or_else(PoisonError::into_inner);
    match chain.call(method, &request["params"]) {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(message) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": message}})
        }
    }
}

fn quantity(n: impl std::fmt::LowerHex) -> Value {
    json!(format!("{n:#x}"))
}

fn param<T: serde::de::DeserializeOwned>(params: &Value, at: usize) -> Result<T, String> {
    serde_json::from_value(params[at].clone()).map_err(|e| format!("invalid params: {e}"))
}

impl Chain {
    fn account(&self, address: Address) -> AccountInfo {
        self.db
            .basic_ref(address)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn call(&mut self, method: &str, params: &Value) -> Result<Value, String> {
        match method {
            "eth_chainId" => Ok(quantity(self.chain_id)),
            "eth_blockNumber" => Ok(quantity(self.executed)),
            "eth_getBalance" => Ok(quantity(self.account(param(params, 0)?).balance)),
            "eth_getTransactionCount" => Ok(quantity(self.account(param(params, 0)?).nonce)),
            "eth_gasPrice" => Ok(quantity(2 * BASE_FEE)),
            "eth_maxPriorityFeePerGas" => Ok(quantity(BASE_FEE)),
            "eth_feeHistory" => {
                let blocks: U256 = param(params, 0)?;
                let blocks = u64::try_from(blocks).map_err(|_| "block count")?.min(1024);
                let count = usize::try_from(blocks).map_err(|_| "block count")?;
                let history = FeeHistory {
                    base_fee_per_gas: vec![u128::from(BASE_FEE); count + 1],
                    gas_used_ratio: vec![0.5; count],
                    oldest_block: self.executed.saturating_sub(blocks),
                    reward: Some(vec![vec![u128::from(BASE_FEE)]; count]),
                    ..Default::default()
                };
                serde_json::to_value(history).map_err(|e| e.to_string())
            }
            "eth_estimateGas" => {
                let request: TransactionRequest = param(params, 0)?;
                let from = request.from.unwrap_or_default();
                let tx = TxEnv::builder()
                    .caller(from)
                    .kind(request.to.unwrap_or(TxKind::Create))
                    .value(request.value.unwrap_or_default())
                    .data(request.input.into_input().unwrap_or_default())
                    .nonce(self.account(from).nonce)
                    .chain_id(Some(self.chain_id))
                    .gas_limit(TX_GAS_CAP)
                    .gas_price(u128::from(BASE_FEE))
                    .build_fill();
                let result = self.execute(tx, false)?;
                Ok(quantity(result))
            }
            "eth_sendRawTransaction" => {
                let raw: Bytes = param(params, 0)?;
                let envelope = TxEnvelope::decode_2718_exact(raw.as_ref())
                    .map_err(|e| format!("invalid transaction: {e}"))?;
                let sender = envelope
                    .recover_signer()
                    .map_err(|e| format!("invalid signature: {e}"))?;
                let tx = TxEnv::builder()
                    .tx_type(Some(envelope.ty()))
                    .caller(sender)
                    .gas_limit(envelope.gas_limit())
                    .gas_price(envelope.max_fee_per_gas())
                    .gas_priority_fee(envelope.max_priority_fee_per_gas())
                    .kind(envelope.kind())
                    .value(envelope.value())
                    .data(envelope.input().clone())
                    .nonce(envelope.nonce())
                    .chain_id(envelope.chain_id())
                    .access_list(envelope.access_list().cloned().unwrap_or_default())
                    .build()
                    .map_err(|e| format!("{e:?}"))?;
                self.execute(tx, true)?;
                self.senders.push(sender);
                Ok(json!(B256::from(*envelope.tx_hash())))
            }
            other => Err(format!("method {other} not served by this stand-in")),
        }
    }

    /// Executes `tx` in the next block; commits it if `commit`. Returns the gas it used.
    fn execute(&mut self, tx: TxEnv, commit: bool) -> Result<u64, String> {
        let (chain_id, number) = (self.chain_id, self.executed + 1);
        let mut evm = Context::mainnet()
            .with_db(&mut self.db)
            .modify_block_chained(|block| {
                block.number = U256::from(number);
                block.basefee = BASE_FEE;
                block.gas_limit = BLOCK_GAS_LIMIT;
                block.prevrandao = Some(B256::ZERO);
            })
            .modify_cfg_chained(|cfg| cfg.chain_id = chain_id)
            .build_mainnet();
        let result = if commit {
            evm.transact_commit(tx)
        } else {
            evm.transact(tx).map(|out| out.result)
        }
        .map_err(|e| format!("transaction refused: {e}"))?;
        if !result.is_success() {
            return Err(format!("execution failed: {result}"));
        }
        if commit {
            self.executed += 1;
        }
        Ok(result.tx_gas_used())
    }
}
