-- One row per source identity of a vehicle; several identities may share one vehicle_id.
with identities as (
    select * from {{ ref('int_vehicle_identities') }}
),

final as (
    select
        vehicle_id,
        display_name,
        source,
        source_vehicle_id
    from identities
)

select * from final
