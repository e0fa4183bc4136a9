//! A hostile host that holds valid API keys of its own ("mallory") sits between the SDK and the
//! real host. It appends its stamps, lifts import ciphertexts into requests of its own, and
//! names victims as keyring admins. None of it gains authority; the honest request beside each
//! attack succeeds.

use prost::Message as _;
use signer_client::pb::request_body::Operation;
use signer_client::{ApiKeyPair, ApiKeyScheme, Client, pb};
use tests::relay::Method;
use tests::{HostileRelay, Stack, StackOptions, stamper};
use tonic::Code;

use super::hostile::{code, sign_body};

fn ed25519() -> ApiKeyPair {
    ApiKeyPair::generate(ApiKeyScheme::Ed25519).unwrap()
}

/// A keyring administered by `admins`, created through the stack's creator key (which must stamp
/// along with every admin).
async fn keyring_for(stack: &Stack, admins: &[&ApiKeyPair]) -> String {
    let creator = stack.admin_key();
    let mut keys = vec![&creator];
    keys.extend_from_slice(admins);
    let client = stack.client_with(Some(stamper(&keys))).await;
    client
        .create_keyring(admins.iter().map(|k| k.public()).collect(), 1)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_stamps_give_a_relay_no_authority_over_new_keys() {
    let stack = Stack::start("k256").await;
    let (victim, mallory) = (ed25519(), ed25519());
    // Mallory is even a co-admin of the keyring: allowed to create keys of its own there, but
    // that gives it no say over the victim's.
    let keyring = keyring_for(&stack, &[&victim, &mallory]).await;
    let relay = HostileRelay::start(&stack.address).await;
    let deployment = stack.deployment_id.clone();
    let appended = tests::copy(&mallory);
    relay.tamper(Some(std::sync::Arc::new(move |method, request| {
        if method == Method::CreateKey || method == Method::ImportKey {
            request
                .stamps
                .push(appended.stamp(&deployment, &request.body));
        }
    })));
    let client = stack
        .client_at(relay.address.clone(), Some(stamper(&[&victim])))
        .await;
    let key = client
        .create_key(&keyring, "victim's wallet")
        .await
        .unwrap();
    assert_eq!(
        key.policy.approvers,
        vec![victim.public()],
        "only the victim approves"
    );
    assert_eq!(
        key.policy.admins,
        vec![victim.public()],
        "only the victim administers"
    );
    assert_eq!(key.policy_version, 1);

    // Mallory's own stamps sign nothing and change nothing on that key.
    let direct = stack.client_with(Some(stamper(&[&mallory]))).await;
    let mallorys_sign = stack.stamped(sign_body(&direct, &key.key_id, [1; 32]), &[&mallory]);
    assert_eq!(code(&direct, mallorys_sign).await, Code::PermissionDenied);
    let takeover = direct
        .update_policy(
            &key.key_id,
            pb::Policy {
                approvers: vec![mallory.public()],
                threshold: 1,
                schemes: vec![1],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(takeover.code(), Some(Code::PermissionDenied));
    // A body without a policy, hoping for a default built from whoever stamped: refused.
    let no_policy = direct
        .body(Operation::CreateKey(pb::CreateKeyBody {
            keyring_id: keyring.clone(),
            label: String::new(),
            policy: None,
            kind: 0,
        }))
        .unwrap();
    let refused = relay
        .host()
        .create_key(stack.stamped(no_policy, &[&victim, &mallory]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    // The honest path: the victim signs through the same relay, its signature verifies.
    client.sign_digest(&key.key_id, [2; 32]).await.unwrap();
}

/// The lifted parts of a victim's import, re-wrapped by the attacker.
fn lifted(original: &pb::SignedRequest, edit: impl FnOnce(&mut pb::RequestBody)) -> Vec<u8> {
    let mut body = pb::RequestBody::decode(original.body.as_slice()).unwrap();
    edit(&mut body);
    body.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifted_import_ciphertext_opens_in_no_other_request() {
    let stack = Stack::start("k256").await;
    let (victim, mallory) = (ed25519(), ed25519());
    let victims = keyring_for(&stack, &[&victim]).await;
    let mallorys = keyring_for(&stack, &[&mallory]).await;
    let relay = HostileRelay::start(&stack.address).await;
    // The relay keeps the victim's import to itself: what reaches the host is garbage.
    relay.tamper(Some(std::sync::Arc::new(|method, request| {
        if method == Method::ImportKey {
            request.body = vec![0xff; 8];
        }
    })));
    let client = stack
        .client_at(relay.address.clone(), Some(stamper(&[&victim])))
        .await;
    let secret = [0x5a; 32];
    assert!(
        client
            .import_key(&victims, "x", None, &secret)
            .await
            .is_err()
    );
    let original = relay.seen(Method::ImportKey).pop().unwrap();

    let mallorys_policy = pb::Policy {
        approvers: vec![mallory.public()],
        threshold: 1,
        schemes: vec![1, 2],
        admins: vec![mallory.public()],
        admin_threshold: 1,
        ..Default::default()
    };
    let import = |edit: &dyn Fn(&mut pb::ImportKeyBody)| {
        lifted(&original, |body| {
            let Some(Operation::ImportKey(import)) = body.operation.as_mut() else {
                panic!("an import body")
            };
            edit(import);
        })
    };
    // Into Mallory's keyring under Mallory's policy, stamped by Mallory, same nonce.
    let into_own_keyring = import(&|i| {
        i.keyring_id = mallorys.clone();
        i.policy = Some(mallorys_policy.clone());
    });
    // The victim's keyring, Mallory's policy.
    let own_policy = import(&|i| i.policy = Some(mallorys_policy.clone()));
    // Everything as the victim sent it but a fresh nonce (a new request of Mallory's).
    let fresh_nonce = lifted(&original, |body| body.nonce = vec![0x11; 16]);
    let mut host = relay.host();
    // Mallory administers its own keyring, so its stamps authorise the request: the ciphertext
    // is what refuses, because it is bound to the victim's keyring and policy.
    let status = host
        .import_key(stack.stamped(into_own_keyring, &[&mallory]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "import ciphertext does not open");
    // In the victim's keyring Mallory's stamps count for nothing.
    for body in [own_policy, fresh_nonce] {
        let status = host
            .import_key(stack.stamped(body, &[&mallory]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    // Even an admin of the victim's keyring cannot re-home the ciphertext under another policy.
    let victims_policy = import(&|i| i.policy = Some(mallorys_policy.clone()));
    let status = host
        .import_key(stack.stamped(victims_policy, &[&victim]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "import ciphertext does not open");

    // The honest path: the victim's own request, delivered unchanged, imports the key.
    let imported = host.import_key(original).await.unwrap().into_inner();
    let key = imported.key.unwrap();
    let expected = k256::SecretKey::from_slice(&secret).unwrap().public_key();
    assert_eq!(
        key.public_key_compressed,
        k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(expected.as_affine(), true)
            .as_bytes()
    );
}

async fn create_keyring_code(
    host: &mut pb::signer_service_client::SignerServiceClient<tonic::transport::Channel>,
    request: pb::SignedRequest,
) -> Code {
    host.create_keyring(request)
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

fn keyring_body(client: &Client, admins: &[&ApiKeyPair]) -> Vec<u8> {
    client
        .body(Operation::CreateKeyring(pb::CreateKeyringBody {
            admins: Some(pb::KeyringAdmins {
                admins: admins.iter().map(|k| k.public()).collect(),
                threshold: 1,
            }),
        }))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyrings_need_the_configured_creators_and_every_admin_they_name() {
    let options = StackOptions {
        enclave_args: vec!["--max-keyrings=2".into()],
        ..StackOptions::default()
    };
    let stack = Stack::start_with(tempfile::tempdir().unwrap(), &options).await;
    let creator = stack.admin_key();
    let (victim, mallory) = (ed25519(), ed25519());
    let client = stack.client_with(None).await;
    let mut host = client.raw();
    // Mallory is no creator: a keyring of its own is refused.
    let own = stack.stamped(keyring_body(&client, &[&mallory]), &[&mallory]);
    assert_eq!(
        create_keyring_code(&mut host, own).await,
        Code::PermissionDenied
    );
    // The creator names the victim as co-admin without the victim's stamp: refused.
    let unconsented = stack.stamped(keyring_body(&client, &[&creator, &victim]), &[&creator]);
    assert_eq!(
        create_keyring_code(&mut host, unconsented).await,
        Code::PermissionDenied
    );
    // Mallory stamps along with the victim, naming both: still no creator.
    let no_creator = stack.stamped(
        keyring_body(&client, &[&victim, &mallory]),
        &[&victim, &mallory],
    );
    assert_eq!(
        create_keyring_code(&mut host, no_creator).await,
        Code::PermissionDenied
    );
    assert!(stack.log().contains("a named keyring admin did not stamp"));
    assert!(stack.log().contains("keyring creator quorum not met"));
    // The honest path: creator and every named admin stamp.
    for _ in 0..2 {
        let honest = stack.stamped(keyring_body(&client, &[&victim]), &[&creator, &victim]);
        assert_eq!(create_keyring_code(&mut host, honest).await, Code::Ok);
    }
    // The cap: a third keyring is refused, and says so generically.
    let third = stack.stamped(keyring_body(&client, &[&victim]), &[&creator, &victim]);
    let status = host.create_keyring(third).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "enclave capacity reached");

    // A deployment with no creators configured creates no keyring at all.
    let closed = Stack::start_with(
        tempfile::tempdir().unwrap(),
        &StackOptions {
            keyring_creators: Some(vec![]),
            ..StackOptions::default()
        },
    )
    .await;
    let closed_client = closed.client_with(None).await;
    let body = keyring_body(&closed_client, &[&creator]);
    let status = closed_client
        .raw()
        .create_keyring(closed.stamped(body, &[&creator]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}
