//! `diskshadow array attach|detach|list`: storage arrays and Ceph pools, over the service.

use crate::service::{ServiceError, ShadowService};

use super::{base_dir, ArrayCommand};

pub fn array(service: &mut dyn ShadowService, command: ArrayCommand) -> Result<(), ServiceError> {
    match command {
        ArrayCommand::Attach {
            dir,
            name,
            conf,
            client_id,
        } => {
            if let Some(pool) = dir.to_str().and_then(|text| text.strip_prefix("rbd:")) {
                let Some(conf) = conf else {
                    return Err(ServiceError::invalid(
                        "a Ceph pool needs its cluster's configuration: array attach rbd:POOL --conf FILE",
                    ));
                };
                let conf = if conf.is_absolute() {
                    conf
                } else {
                    base_dir().join(conf)
                };
                let info =
                    service.attach_rbd_pool(pool, &conf, client_id.as_deref(), name.as_deref())?;
                println!(
                    "Attached to the Ceph pool {pool} as the array {} ({{{}}}); cluster {}.",
                    info.name,
                    info.id.hyphenated(),
                    conf.display()
                );
                return Ok(());
            }
            if conf.is_some() || client_id.is_some() {
                return Err(ServiceError::invalid(
                    "--conf and --id are for a Ceph pool (rbd:POOL), not an array directory",
                ));
            }
            let dir = if dir.is_absolute() {
                dir
            } else {
                base_dir().join(dir)
            };
            let info = service.attach_array(&dir, name.as_deref())?;
            let count = |number: usize, one: &str, many: &str| {
                format!("{number} {}", if number == 1 { one } else { many })
            };
            println!(
                "Attached to the array {} ({{{}}}) at {}; {}, {}.",
                info.name,
                info.id.hyphenated(),
                info.path.display(),
                count(info.hosts.len(), "host", "hosts"),
                count(info.shadow_luns, "shadow LUN", "shadow LUNs")
            );
            Ok(())
        }
        ArrayCommand::Detach { name } => {
            service.detach_array(&name)?;
            println!("Detached from the array {name}.");
            Ok(())
        }
        ArrayCommand::List { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&service.arrays()?).unwrap_or_default()
            );
            Ok(())
        }
        ArrayCommand::List { json: false } => {
            let arrays = service.arrays()?;
            for info in &arrays {
                println!(
                    "{}  {{{}}}  {}",
                    info.name,
                    info.id.hyphenated(),
                    info.path.display()
                );
                if let Some(rbd) = &info.rbd {
                    println!("    kind: rbd (Ceph pool {})", rbd.pool);
                    println!("    conf: {}", rbd.conf.display());
                    if let Some(client_id) = &rbd.client_id {
                        println!("    client: client.{client_id}");
                    }
                    if let Some(problem) = &info.problem {
                        println!("    unreachable: {problem}");
                    }
                    continue;
                }
                match &info.problem {
                    Some(problem) => println!("    unreadable: {problem}"),
                    None => {
                        println!("    shadow LUNs: {}", info.shadow_luns);
                        for host in &info.hosts {
                            println!("    host: {host}");
                        }
                    }
                }
            }
            println!("Number of arrays listed: {}", arrays.len());
            Ok(())
        }
    }
}
